/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

/* Whole requests through the gate and the operations, against a SoftHSM token of its
 * own in a temporary directory. The first input byte picks the config and the TLS
 * identity of the connection; the rest is a run of TTLV messages, split by their
 * 8-byte headers as the relay reads them, which session_answer answers as one
 * connection's requests. Besides crashes, leaks and UBSan reports, it stops at:
 *   - a response that does not decode, whose header or items are malformed, or that
 *     is not in the version negotiation promises;
 *   - a response item that does not answer its request item (operation, Unique
 *     Batch Item ID);
 *   - a successful item for a client that no config entry identifies, or of an
 *     operation that its entry does not allow or, read-only, that changes the token;
 *   - a key made or registered with an algorithm or length its entry does not allow,
 *     judged on the key in the token;
 *   - a Unique Identifier in a response that the client may not see: another
 *     namespace's object, or the relay's own TLS key (which the harness makes and
 *     reserves, as the relay does for a tls.key in the token);
 *   - a read-only client that changed the number of objects in the token;
 *   - the reserved key gone or changed.
 * Keys made outside the relay (fixtures with short, fixed CKA_IDs, so that inputs
 * can name them: A1_secret (AES), A2_priv and A2_pub (P-256), A3_secret (HMAC), B0_priv
 * and B0_pub (placed in beta); the reserved key is 5E_priv and 5E_pub) and the
 * token's epoch object are made again whenever the token is emptied, which happens after every WIPE_AFTER writes
 * so that throughput stays steady. Every input is a connection of its own, on the
 * token opened once. The configs have no pkcs11.lock_file (one process needs
 * none), and no client whose Password is the PIN, which only a token opened for
 * the connection can check. */

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/pkcs11.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cfg.h"
#include "kmip.h"
#include "p11.h"
#include "policy.h"
#include "session.h"
#include "tls.h"
#include "token.h"

extern char **environ;

#ifndef CKK_CHACHA20 /* PKCS#11 3.0, which p11-kit 0.24's pkcs11.h lacks */
#define CKK_CHACHA20 0x33UL
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__lsan_default_suppressions(void);

#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define TOKEN_LABEL "fuzz"
#define PIN "1234"
#define CAROL_PASSWORD "carol-password"
#define SPKI_ALPHA "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SPKI_VIEWER "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define MAX_REQUESTS 16
#define WIPE_AFTER 200 /* token writes between two wipes */

/* SoftHSM leaks OpenSSL objects when it makes EC and EdDSA keys (test/lsan.supp);
 * those stacks are the module's. */
const char *__lsan_default_suppressions(void)
{
	return "leak:libcrypto.so\nleak:libsofthsm2.so\n";
}

static char dir[256];
static struct cfg *cfg_clients, *cfg_single;
static struct conn_token master; /* the token, opened once; each input gets a copy */
static CK_OBJECT_HANDLE reserved_pub;
static unsigned long writes_at_wipe;

/* The relay's own TLS key: an EC key pair that no client may reach. */
static const uint8_t reserved_id[] = { 0x5E };
static const char reserved_label[] = "relay-tls";

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void remove_dir(void)
{
	if (dir[0])
		(void)nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A finding: abort() for libFuzzer to save the input, leaving no directory behind. */
static void die(const char *what)
{
	fprintf(stderr, "fuzz_gate: %s\n", what);
	remove_dir();
	abort();
}

static void path_in_dir(char *out, size_t size, const char *name)
{
	if ((size_t)snprintf(out, size, "%s/%s", dir, name) >= size)
		die("temporary path too long");
}

/* A new file, made with its mode (the PIN file's is 0600 from the start). */
static void write_file(const char *name, const char *text, mode_t mode)
{
	char path[512];
	int fd;
	FILE *f;

	path_in_dir(path, sizeof(path), name);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
		die("cannot write a file in the temporary directory");
}

static void teardown(void)
{
	token_close(&master);
	cfg_free(cfg_clients);
	cfg_free(cfg_single);
	remove_dir();
}

/* softhsm2-util --init-token, its output to /dev/null. */
static void init_token(void)
{
	char *const argv[] = { "softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL,
			       "--pin", PIN, "--so-pin", "123456", NULL };
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int status;

	if (posix_spawn_file_actions_init(&fa) != 0 ||
	    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0) != 0 ||
	    posix_spawn_file_actions_adddup2(&fa, 1, 2) != 0)
		die("posix_spawn_file_actions");
	if (posix_spawnp(&pid, "softhsm2-util", &fa, NULL, argv, environ) != 0)
		die("cannot run softhsm2-util");
	posix_spawn_file_actions_destroy(&fa);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("softhsm2-util --init-token failed");
}

static struct cfg *load_config(const char *name, const char *text)
{
	char path[512], *errors = NULL;
	struct cfg *c = NULL;

	write_file(name, text, 0600);
	path_in_dir(path, sizeof(path), name);
	if (cfg_load(path, &c, &errors) < 0) {
		fprintf(stderr, "fuzz_gate: %s: %s", name, errors ? errors : "out of memory\n");
		die("the config was refused");
	}
	return c;
}

/* Two configs on the one token: clients in namespaces, and none (single tenant). */
static void write_configs(void)
{
	static const char clients_fmt[] =
		"{\"tls\": {\"certificate\": \"%1$s/cert.pem\", \"key\": \"%1$s/key.pem\",\n"
		"  \"client_ca\": \"%1$s/ca.pem\", \"require_client_certificate\": false},\n"
		" \"pkcs11\": {\"module\": \"" SOFTHSM_MODULE "\", \"token\": \"pkcs11:token=" TOKEN_LABEL "\",\n"
		"  \"pin_file\": \"%1$s/pin\"},\n"
		" \"keys\": {\"extractable\": true, \"destroy_revokes_for_credential_clients\": true,\n"
		"  \"software_random\": true},\n"
		" \"clients\": [\n"
		"  {\"name\": \"alpha\", \"certificate_spki_sha256\": \"%2$s\"},\n"
		"  {\"name\": \"beta\", \"certificate_name\": \"beta.example\"},\n"
		"  {\"name\": \"viewer\", \"certificate_spki_sha256\": \"%3$s\", \"namespace\": \"alpha\",\n"
		"   \"read_only\": true, \"untagged_keys\": true},\n"
		"  {\"name\": \"limited\", \"certificate_name\": \"limited.example\", \"extractable\": false,\n"
		"   \"operations\": [\"Create\", \"Create Key Pair\", \"Register\", \"Locate\", \"Get\",\n"
		"    \"Get Attributes\", \"Activate\", \"Sign\", \"Destroy\"],\n"
		"   \"algorithms\": {\"AES\": [128], \"EC\": [256], \"RSA\": [2048]}},\n"
		"  {\"name\": \"carol\", \"username\": \"carol\", \"password_sha256\": \"%4$s\",\n"
		"   \"untagged_keys\": true}\n"
		" ],\n"
		" \"namespaces\": {\"beta\": [\"B0\"]}}\n";
	static const char single_fmt[] =
		"{\"tls\": {\"certificate\": \"%1$s/cert.pem\", \"key\": \"%1$s/key.pem\",\n"
		"  \"client_ca\": \"%1$s/ca.pem\"},\n"
		" \"pkcs11\": {\"module\": \"" SOFTHSM_MODULE "\", \"token\": \"pkcs11:token=" TOKEN_LABEL "\",\n"
		"  \"pin_file\": \"%1$s/pin\"},\n"
		" \"keys\": {\"extractable\": true, \"verify_signatures\": true}}\n";
	char text[4096], carol[65];
	uint8_t hash[32];

	if (gnutls_hash_fast(GNUTLS_DIG_SHA256, CAROL_PASSWORD, strlen(CAROL_PASSWORD), hash) < 0)
		die("gnutls_hash_fast");
	for (size_t i = 0; i < sizeof(hash); i++)
		snprintf(carol + 2 * i, 3, "%02x", hash[i]);
	if ((size_t)snprintf(text, sizeof(text), clients_fmt, dir, SPKI_ALPHA, SPKI_VIEWER, carol) >= sizeof(text))
		die("config too long");
	cfg_clients = load_config("clients.json", text);
	if ((size_t)snprintf(text, sizeof(text), single_fmt, dir) >= sizeof(text))
		die("config too long");
	cfg_single = load_config("single.json", text);
}

/* Keys made outside the relay, with no relay metadata: an AES key, an EC key pair and
 * an HMAC key in no namespace, and an EC key pair that "namespaces" places in beta. */
static void make_fixtures(void)
{
	static const uint8_t p256[] = { 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07 };
	struct p11_token *t = master.tls_tok;
	CK_OBJECT_CLASS secret = CKO_SECRET_KEY;
	CK_KEY_TYPE aes = CKK_AES, generic = CKK_GENERIC_SECRET;
	CK_ULONG len32 = 32;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_MECHANISM aes_gen = { CKM_AES_KEY_GEN, NULL, 0 }, generic_gen = { CKM_GENERIC_SECRET_KEY_GEN, NULL, 0 },
		     ec_gen = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	uint8_t aes_id[] = { 0xA1 }, hmac_id[] = { 0xA3 }, ec_id[] = { 0xA2 }, beta_id[] = { 0xB0 };
	CK_ATTRIBUTE aes_tmpl[] = {
		{ CKA_CLASS, &secret, sizeof(secret) }, { CKA_KEY_TYPE, &aes, sizeof(aes) },
		{ CKA_VALUE_LEN, &len32, sizeof(len32) }, { CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_ID, aes_id, sizeof(aes_id) },       { CKA_ENCRYPT, &yes, sizeof(yes) },
		{ CKA_DECRYPT, &yes, sizeof(yes) },       { CKA_SENSITIVE, &no, sizeof(no) },
		{ CKA_EXTRACTABLE, &yes, sizeof(yes) },
	};
	CK_ATTRIBUTE hmac_tmpl[] = {
		{ CKA_CLASS, &secret, sizeof(secret) }, { CKA_KEY_TYPE, &generic, sizeof(generic) },
		{ CKA_VALUE_LEN, &len32, sizeof(len32) }, { CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_ID, hmac_id, sizeof(hmac_id) },     { CKA_SIGN, &yes, sizeof(yes) },
		{ CKA_VERIFY, &yes, sizeof(yes) },
	};
	CK_OBJECT_HANDLE h, pub, priv;

	if (p11_generate_key(t, &aes_gen, aes_tmpl, sizeof(aes_tmpl) / sizeof(aes_tmpl[0]), &h) < 0 ||
	    p11_generate_key(t, &generic_gen, hmac_tmpl, sizeof(hmac_tmpl) / sizeof(hmac_tmpl[0]), &h) < 0)
		die("cannot make the secret key fixtures");
	for (int i = 0; i < 2; i++) {
		uint8_t *id = i ? beta_id : ec_id;
		CK_ATTRIBUTE pub_tmpl[] = {
			{ CKA_EC_PARAMS, (void *)p256, sizeof(p256) }, { CKA_TOKEN, &yes, sizeof(yes) },
			{ CKA_ID, id, 1 }, { CKA_VERIFY, &yes, sizeof(yes) },
		};
		CK_ATTRIBUTE priv_tmpl[] = {
			{ CKA_TOKEN, &yes, sizeof(yes) }, { CKA_PRIVATE, &yes, sizeof(yes) },
			{ CKA_ID, id, 1 },                { CKA_SIGN, &yes, sizeof(yes) },
			{ CKA_SENSITIVE, &no, sizeof(no) }, { CKA_EXTRACTABLE, &yes, sizeof(yes) },
		};

		if (p11_generate_key_pair(t, &ec_gen, pub_tmpl, 4, priv_tmpl, 6, &pub, &priv) < 0)
			die("cannot make the EC key pair fixtures");
	}
	/* The token's epoch (store.h), which the first connection that uses a key
	 * without metadata twice would make: the relay's own, not a client's change. */
	{
		struct store st = { .tok = t };
		struct store_epoch e;

		if (store_epoch_read(&st, &e) < 0)
			die("cannot make the epoch");
	}
}

/* The relay's TLS key in the token, reserved as main.c does for a pkcs11: tls.key. */
static void make_reserved_key(void)
{
	static const uint8_t p256[] = { 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07 };
	CK_BBOOL yes = CK_TRUE;
	CK_MECHANISM ec_gen = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_ATTRIBUTE pub_tmpl[] = {
		{ CKA_EC_PARAMS, (void *)p256, sizeof(p256) }, { CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_ID, (void *)reserved_id, sizeof(reserved_id) }, { CKA_VERIFY, &yes, sizeof(yes) },
		{ CKA_LABEL, (void *)reserved_label, sizeof(reserved_label) - 1 },
	};
	CK_ATTRIBUTE priv_tmpl[] = {
		{ CKA_TOKEN, &yes, sizeof(yes) }, { CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_ID, (void *)reserved_id, sizeof(reserved_id) }, { CKA_SIGN, &yes, sizeof(yes) },
		{ CKA_LABEL, (void *)reserved_label, sizeof(reserved_label) - 1 },
	};
	CK_OBJECT_HANDLE priv;

	if (p11_generate_key_pair(master.tls_tok, &ec_gen, pub_tmpl, 5, priv_tmpl, 5, &reserved_pub, &priv) < 0)
		die("cannot make the reserved key");
	token_reserve(&master, priv);
	if (master.reserved_id_len != sizeof(reserved_id))
		die("token_reserve did not read the reserved key's CKA_ID");
}

/* The reserved key pair is still there, unchanged. */
static void check_reserved(void)
{
	CK_OBJECT_HANDLE keys[2] = { master.reserved_handle, reserved_pub };

	for (size_t i = 0; i < 2; i++) {
		uint8_t id[8], label[32];
		CK_ATTRIBUTE a[] = { { CKA_ID, id, sizeof(id) }, { CKA_LABEL, label, sizeof(label) } };

		if (p11_get_attrs(master.tls_tok, keys[i], a, 2) < 0 || a[0].ulValueLen != sizeof(reserved_id) ||
		    memcmp(id, reserved_id, sizeof(reserved_id)) != 0 ||
		    a[1].ulValueLen != sizeof(reserved_label) - 1 ||
		    memcmp(label, reserved_label, sizeof(reserved_label) - 1) != 0)
			die("the reserved key was destroyed or changed");
	}
}

static size_t count_objects(void)
{
	CK_OBJECT_HANDLE *h = NULL;
	size_t n = 0;

	if (p11_find_all(master.tls_tok, NULL, 0, &h, &n) < 0)
		die("C_FindObjects failed");
	free(h);
	return n;
}

/* Destroys every object but the reserved key, and makes the fixtures again. */
static void wipe(void)
{
	CK_OBJECT_HANDLE *h = NULL;
	size_t n = 0;

	if (p11_find_all(master.tls_tok, NULL, 0, &h, &n) < 0)
		die("C_FindObjects failed");
	for (size_t i = 0; i < n; i++)
		if (h[i] != master.reserved_handle && h[i] != reserved_pub && p11_destroy(master.tls_tok, h[i]) < 0)
			die("C_DestroyObject failed");
	free(h);
	make_fixtures();
	writes_at_wipe = p11_writes(master.tls_tok);
}

static void setup(void)
{
	const char *tmp = getenv("TMPDIR");
	char path[512];

	/* As main.c: GnuTLS must never load p11-kit's registered modules. */
	if (gnutls_pkcs11_init(GNUTLS_PKCS11_FLAG_MANUAL, NULL) < 0)
		die("gnutls_pkcs11_init");
	if ((size_t)snprintf(dir, sizeof(dir), "%s/fuzz_gate.XXXXXX", tmp && *tmp ? tmp : "/tmp") >= sizeof(dir) ||
	    !mkdtemp(dir))
		die("cannot make a temporary directory");
	path_in_dir(path, sizeof(path), "tokens");
	if (mkdir(path, 0700) < 0)
		die("mkdir tokens");
	{
		char conf[600];

		snprintf(conf, sizeof(conf),
			 "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", path);
		write_file("softhsm2.conf", conf, 0600);
	}
	path_in_dir(path, sizeof(path), "softhsm2.conf");
	if (setenv("SOFTHSM2_CONF", path, 1) < 0)
		die("setenv");
	init_token();
	write_file("pin", PIN "\n", 0600);
	/* cfg_load wants readable files; TLS is not used. */
	write_file("cert.pem", "not used\n", 0600);
	write_file("key.pem", "not used\n", 0600);
	write_file("ca.pem", "not used\n", 0600);
	write_configs();
	token_init(&master, cfg_clients);
	if (token_open_configured(&master) < 0) {
		fprintf(stderr, "fuzz_gate: %s\n", master.why ? master.why : "?");
		die("cannot open the token");
	}
	/* After the module's own exit handlers (registered when it was loaded), so that
	 * this one runs first and closes the session while the module still works. */
	atexit(teardown);
	make_reserved_key();
	make_fixtures();
	writes_at_wipe = p11_writes(master.tls_tok);
}

/* The connection's TLS peer, as tls.c would describe it; the first input byte's low
 * seven bits pick one, its high bit the config without clients. */
static char *beta_names[] = { "beta.example" };
static char *limited_names[] = { "www.example", "limited.example" };
static char *nobody_names[] = { "nobody.example" };
static char dn[] = "CN=fuzz";
static const struct tls_identity identities[] = {
	{ .has_certificate = false },
	/* alpha, pinned */
	{ true, SPKI_ALPHA, dn, false, NULL, 0 },
	/* beta, by the name the CA vouches for */
	{ true, "1111111111111111111111111111111111111111111111111111111111111111", dn, true, beta_names, 1 },
	/* beta's name in a certificate the CA did not issue: no one */
	{ true, "2222222222222222222222222222222222222222222222222222222222222222", dn, false, beta_names, 1 },
	/* viewer, read-only (VIEWER) */
	{ true, SPKI_VIEWER, dn, false, NULL, 0 },
	/* limited, its name second */
	{ true, "3333333333333333333333333333333333333333333333333333333333333333", dn, true, limited_names, 2 },
	/* a certificate from the CA that no entry names */
	{ true, "4444444444444444444444444444444444444444444444444444444444444444", dn, true, nobody_names, 1 },
	/* no certificate again: credentials are the rest of the input's business */
	{ .has_certificate = false },
};
#define N_IDENTITIES (sizeof(identities) / sizeof(identities[0]))
#define VIEWER 4

/* What the harness knows of one connection while its responses come back. */
struct conn {
	const struct cfg *cfg;
	const struct tls_identity *id;
	const uint8_t *const *reqs;
	const size_t *lens;
	size_t next; /* the request the next response answers */
};

static bool hex_id(const char *s, size_t len, uint8_t *out, size_t *ret_len)
{
	size_t n = 0;

	while (n < len && s[n] != '_')
		n++;
	if (n == 0 || n % 2 || n / 2 > STORE_MAX_ID)
		return false;
	for (size_t i = 0; i < n; i += 2) {
		unsigned v;

		if (sscanf((char[3]){ s[i], s[i + 1], 0 }, "%2x", &v) != 1)
			return false;
		out[i / 2] = (uint8_t)v;
	}
	*ret_len = n / 2;
	return true;
}

static bool is_uid_tag(uint32_t tag)
{
	return tag == KMIP_TAG_UNIQUE_IDENTIFIER || tag == KMIP_TAG_PRIVATE_KEY_UNIQUE_IDENTIFIER ||
	       tag == KMIP_TAG_PUBLIC_KEY_UNIQUE_IDENTIFIER;
}

/* Every object a payload names must be one the client sees. */
static void check_visible(const struct cfg *c, const struct cfg_client *cl, const struct ttlv_item *it)
{
	for (; it; it = it->next) {
		uint8_t id[STORE_MAX_ID];
		size_t len;

		if (it->type == TTLV_STRUCTURE) {
			check_visible(c, cl, it->child);
			continue;
		}
		if (!is_uid_tag(it->tag) || it->type != TTLV_TEXT_STRING)
			continue;
		if (!hex_id((const char *)it->value, it->len, id, &len))
			die("a response names an object by a UID the relay did not make");
		if (!policy_visible(c, cl, id, len))
			die("a response names an object of another namespace");
		if (len == sizeof(reserved_id) && memcmp(id, reserved_id, len) == 0)
			die("a response names the relay's own TLS key");
	}
}

/* What the README lists as changing the token, which a read-only client may not do. */
static bool changes_token(uint32_t operation)
{
	switch (operation) {
	case KMIP_OP_CREATE:
	case KMIP_OP_CREATE_KEY_PAIR:
	case KMIP_OP_REGISTER:
	case KMIP_OP_ADD_ATTRIBUTE:
	case KMIP_OP_MODIFY_ATTRIBUTE:
	case KMIP_OP_DELETE_ATTRIBUTE:
	case KMIP_OP_ACTIVATE:
	case KMIP_OP_REVOKE:
	case KMIP_OP_DESTROY:
		return true;
	default:
		return false;
	}
}

/* The exact bit length of a big-endian number, as KMIP's Cryptographic Length of an
 * RSA modulus or a DSA prime. */
static int32_t bits_of(const uint8_t *n, size_t len)
{
	int32_t bits;

	while (len && !*n) {
		n++;
		len--;
	}
	if (!len)
		return 0;
	bits = (int32_t)len * 8;
	for (uint8_t top = *n; !(top & 0x80); top = (uint8_t)(top << 1))
		bits--;
	return bits;
}

static bool attr_bits(CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type, int32_t *ret)
{
	uint8_t *v = NULL;
	size_t len = 0;

	if (p11_get_attr_alloc(master.tls_tok, h, type, &v, &len) < 0)
		return false;
	*ret = bits_of(v, len);
	free(v);
	return true;
}

static bool ec_bits(CK_OBJECT_HANDLE h, int32_t *ret)
{
	static const struct {
		const char *oid;
		size_t len;
		int32_t bits;
	} curves[] = {
		{ "\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07", 10, 256 },
		{ "\x06\x05\x2b\x81\x04\x00\x22", 7, 384 },
		{ "\x06\x05\x2b\x81\x04\x00\x23", 7, 521 },
		{ "\x06\x03\x2b\x65\x70", 5, 255 },
	};
	uint8_t *v = NULL;
	size_t len = 0;
	bool found = false;

	if (p11_get_attr_alloc(master.tls_tok, h, CKA_EC_PARAMS, &v, &len) < 0)
		return false;
	for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]) && !found; i++)
		if (len == curves[i].len && memcmp(v, curves[i].oid, len) == 0) {
			*ret = curves[i].bits;
			found = true;
		}
	free(v);
	return found;
}

/* Whether the client may have the key object h, judged on the token's attributes:
 * AES, HMAC (a generic secret with usage flags; without any it is Secret Data, no
 * key), ChaCha20, RSA, DSA, EC and Ed25519 keys. */
static bool key_allowed(const struct cfg_client *cl, CK_OBJECT_HANDLE h)
{
	enum { AES = 0x03, RSA = 0x04, DSA = 0x05, EC = 0x1A, HMAC_SHA1 = 0x07, HMAC_SHA512 = 0x0B,
	       CHACHA20 = 0x1C, CHACHA20_POLY1305 = 0x1E, ED25519 = 0x37 };
	CK_OBJECT_CLASS cls;
	CK_KEY_TYPE type;
	CK_ULONG value_len = 0;
	CK_BBOOL sign = CK_FALSE, verify = CK_FALSE, enc = CK_FALSE, dec = CK_FALSE;
	CK_ATTRIBUTE a[] = { { CKA_CLASS, &cls, sizeof(cls) }, { CKA_KEY_TYPE, &type, sizeof(type) } };
	CK_ATTRIBUTE secret[] = { { CKA_VALUE_LEN, &value_len, sizeof(value_len) }, { CKA_SIGN, &sign, sizeof(sign) },
				  { CKA_VERIFY, &verify, sizeof(verify) }, { CKA_ENCRYPT, &enc, sizeof(enc) },
				  { CKA_DECRYPT, &dec, sizeof(dec) } };
	int32_t bits = 0;

	if (p11_get_attrs(master.tls_tok, h, a, 1) < 0)
		die("C_GetAttributeValue failed on a new object");
	if (cls != CKO_SECRET_KEY && cls != CKO_PRIVATE_KEY && cls != CKO_PUBLIC_KEY)
		return true; /* a certificate */
	if (p11_get_attrs(master.tls_tok, h, &a[1], 1) < 0)
		die("C_GetAttributeValue failed on a new key");
	switch (type) {
	case CKK_AES:
	case CKK_GENERIC_SECRET:
	case CKK_CHACHA20:
		if (p11_get_attrs(master.tls_tok, h, secret, sizeof(secret) / sizeof(secret[0])) < 0)
			die("C_GetAttributeValue failed on a new secret key");
		bits = (int32_t)value_len * 8;
		if (type == CKK_AES)
			return policy_key_allowed(cl, AES, bits);
		if (type == CKK_CHACHA20)
			return policy_key_allowed(cl, CHACHA20, bits) || policy_key_allowed(cl, CHACHA20_POLY1305, bits);
		if (!sign && !verify && !enc && !dec)
			return true; /* Secret Data */
		for (uint32_t alg = HMAC_SHA1; alg <= HMAC_SHA512; alg++)
			if (policy_key_allowed(cl, alg, bits))
				return true;
		return false;
	case CKK_RSA:
		return attr_bits(h, CKA_MODULUS, &bits) && policy_key_allowed(cl, RSA, bits);
	case CKK_DSA:
		return attr_bits(h, CKA_PRIME, &bits) && policy_key_allowed(cl, DSA, bits);
	case CKK_EC:
		return ec_bits(h, &bits) && policy_key_allowed(cl, EC, bits);
	case CKK_EC_EDWARDS:
		return ec_bits(h, &bits) && policy_key_allowed(cl, ED25519, bits);
	default:
		return false;
	}
}

/* Every key object behind the UIDs a Create, Create Key Pair or Register answered
 * with must be one the client may make. */
static void check_new_keys(const struct cfg_client *cl, const struct ttlv_item *it)
{
	for (; it; it = it->next) {
		uint8_t id[STORE_MAX_ID];
		CK_ATTRIBUTE t[] = { { CKA_ID, id, 0 } };
		CK_OBJECT_HANDLE h[8];
		size_t len, n = 0;

		if (it->type == TTLV_STRUCTURE) {
			check_new_keys(cl, it->child);
			continue;
		}
		if (!is_uid_tag(it->tag) || it->type != TTLV_TEXT_STRING || !hex_id((const char *)it->value, it->len, id, &len))
			continue;
		t[0].ulValueLen = len;
		if (p11_find(master.tls_tok, t, 1, h, 8, &n) < 0)
			die("C_FindObjects failed");
		for (size_t i = 0; i < n; i++)
			if (!key_allowed(cl, h[i]))
				die("a client made a key of an algorithm or length that its entry does not allow");
	}
}

static const struct ttlv_limits *session_limits(const struct cfg *c)
{
	static struct ttlv_limits lim;

	lim = (struct ttlv_limits){ .max_depth = TTLV_MAX_DEPTH, .max_size = c->limits.max_message_size,
				    .max_items = TTLV_DEFAULT_MAX_ITEMS };
	return &lim;
}

/* The version a request is answered in: its own where supported. */
static struct kmip_version answer_version(const uint8_t *buf, size_t len)
{
	struct kmip_version v = { 1, 0 }, ret;

	(void)kmip_peek_version(buf, len, &v);
	(void)kmip_negotiate_version(v, &ret);
	return ret;
}

static int check_response(void *arg, const uint8_t *resp, size_t len)
{
	struct conn *cn = arg;
	const uint8_t *req_buf = cn->reqs[cn->next];
	size_t req_len = cn->lens[cn->next];
	struct kmip_message *req = NULL, *m = NULL;
	const struct cfg_client *cl = NULL;
	struct kmip_version v = answer_version(req_buf, req_len);
	bool identified;

	cn->next++;
	if (kmip_decode_message(resp, len, &ttlv_default_limits, &m) < 0)
		die("a response does not decode");
	if (!m->response || m->n_items == 0 || !(m->header.present & KMIP_FIELD(KMIP_H_BATCH_COUNT)) ||
	    m->header.batch_count < 0 || (size_t)m->header.batch_count != m->n_items)
		die("a response header is malformed");
	if (kmip_version_cmp(m->header.version, v) != 0)
		die("a response is not in the negotiated version");
	if (kmip_decode_message(req_buf, req_len, session_limits(cn->cfg), &req) < 0) {
		req = NULL;
		identified = false;
	} else if (cn->cfg->n_clients) {
		const char *why = NULL;

		cl = policy_identify(cn->cfg, cn->id, &req->header, &why);
		identified = cl != NULL;
	} else {
		identified = cn->id->has_certificate;
	}
	if (req && m->n_items > req->n_items)
		die("a response has more items than its request");
	for (size_t i = 0; i < m->n_items; i++) {
		const struct kmip_batch_item *it = &m->items[i];
		bool failed = it->result_status == KMIP_STATUS_OPERATION_FAILED;

		if (it->error || !(it->present & KMIP_FIELD(KMIP_I_RESULT_STATUS)))
			die("a response item is malformed");
		if (it->result_status != KMIP_STATUS_SUCCESS && !failed &&
		    it->result_status != KMIP_STATUS_OPERATION_UNDONE)
			die("a response item has an unknown Result Status");
		if (failed != !!(it->present & KMIP_FIELD(KMIP_I_RESULT_REASON)))
			die("a Result Reason without a failure, or a failure without one");
		if (failed && kmip_reason_for((enum kmip_reason)it->result_reason, v) != it->result_reason)
			die("a Result Reason that the response's version does not define");
		if (it->present & KMIP_FIELD(KMIP_I_OPERATION) &&
		    (!req || req->items[i].operation != it->operation))
			die("a response item names another operation than its request item");
		if (it->present & KMIP_FIELD(KMIP_I_UNIQUE_BATCH_ITEM_ID) &&
		    (!req || req->items[i].unique_batch_item_id.len != it->unique_batch_item_id.len ||
		     memcmp(req->items[i].unique_batch_item_id.ptr, it->unique_batch_item_id.ptr,
			    it->unique_batch_item_id.len) != 0))
			die("a response item's Unique Batch Item ID is not its request item's");
		if (it->result_status != KMIP_STATUS_SUCCESS)
			continue;
		if (!identified)
			die("a request from no configured client succeeded");
		if (!(it->present & KMIP_FIELD(KMIP_I_OPERATION)))
			die("a successful response item has no Operation");
		if (!policy_operation_allowed(cl, it->operation))
			die("a client ran an operation that its entry does not allow");
		if (cl && cl->read_only && changes_token(it->operation))
			die("a read-only client ran an operation that changes the token");
		if (!(it->present & KMIP_FIELD(KMIP_I_PAYLOAD)))
			continue;
		check_visible(cn->cfg, cl, it->payload.first);
		if (cl && cl->algorithms &&
		    (it->operation == KMIP_OP_CREATE || it->operation == KMIP_OP_CREATE_KEY_PAIR ||
		     it->operation == KMIP_OP_REGISTER))
			check_new_keys(cl, it->payload.first);
	}
	kmip_message_free(req);
	kmip_message_free(m);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *reqs[MAX_REQUESTS];
	size_t lens[MAX_REQUESTS], n = 0, off = 1, before = 0;
	struct conn cn;
	struct conn_token ct;
	bool read_only;

	if (size < 1)
		return 0;
	if (!master.tls_tok)
		setup();
	cn = (struct conn){ .cfg = data[0] & 0x80 ? cfg_single : cfg_clients,
			    .id = &identities[(data[0] & 0x7F) % N_IDENTITIES], .reqs = (const uint8_t *const *)reqs,
			    .lens = lens };
	/* Each request in a buffer of its own size, so that the sanitizers see a read
	 * past its end; the frames as the relay reads them, up to the first that it
	 * would not read whole. */
	while (n < MAX_REQUESTS && size - off >= TTLV_HEADER_LEN) {
		size_t total;

		if (ttlv_frame_length(data + off, session_limits(cn.cfg), &total) < 0 || total > size - off)
			break;
		if (!(reqs[n] = malloc(total)))
			die("out of memory");
		memcpy(reqs[n], data + off, total);
		lens[n++] = total;
		off += total;
	}
	if (n == 0)
		return 0;

	/* A connection of its own: the open token, with nothing of an earlier one. */
	ct = master;
	ct.cfg = cn.cfg;
	read_only = cn.cfg == cfg_clients && cn.id == &identities[VIEWER];
	if (read_only)
		before = count_objects();
	if (session_answer(cn.cfg, cn.id, &ct, (const uint8_t *const *)reqs, lens, n, check_response, &cn) < 0)
		die("session_answer could not make a response");
	if (cn.next != n)
		die("a request was not answered");
	if (read_only && count_objects() != before)
		die("a read-only client changed the token");
	check_reserved();
	if (p11_writes(master.tls_tok) - writes_at_wipe > WIPE_AFTER)
		wipe();
	for (size_t i = 0; i < n; i++)
		free(reqs[i]);
	return 0;
}
