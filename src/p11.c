#include "config.h"

#include "p11.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <gnutls/crypto.h>
#include <stdbool.h>
#include <p11-kit/uri.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct p11_token {
	void *dl;
	CK_FUNCTION_LIST *f;
	bool initialized;
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE session;
	bool has_session;
};

/* PKCS#11 3.0's C_GetInterface; p11-kit 0.24's header is 2.40. A 3.0 function list
 * starts with the 2.40 one, so it is used through CK_FUNCTION_LIST. */
struct ck_interface_30 {
	CK_UTF8CHAR *name;
	void *function_list;
	CK_FLAGS flags;
};
typedef CK_RV (*get_interface_fn)(CK_UTF8CHAR *name, CK_VERSION *version, struct ck_interface_30 **iface,
				  CK_FLAGS flags);

static int load_functions(struct p11_token *t, const char *module, const char **ret_why)
{
	get_interface_fn get_interface;
	CK_C_GetFunctionList get_list;
	CK_C_INITIALIZE_ARGS args = { .flags = CKF_OS_LOCKING_OK };
	CK_RV rv;

	t->dl = dlopen(module, RTLD_NOW | RTLD_LOCAL);
	if (!t->dl) {
		*ret_why = "pkcs11.module: cannot load the module";
		return KR_E_P11_MODULE;
	}
	get_interface = (get_interface_fn)dlsym(t->dl, "C_GetInterface");
	if (get_interface) {
		struct ck_interface_30 *iface = NULL;

		if (get_interface((CK_UTF8CHAR *)"PKCS 11", NULL, &iface, 0) == CKR_OK && iface)
			t->f = iface->function_list;
	}
	if (!t->f) {
		get_list = (CK_C_GetFunctionList)dlsym(t->dl, "C_GetFunctionList");
		if (!get_list || get_list(&t->f) != CKR_OK || !t->f) {
			*ret_why = "pkcs11.module: no PKCS#11 function list";
			return KR_E_P11_MODULE;
		}
	}
	rv = t->f->C_Initialize(&args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		*ret_why = "pkcs11.module: C_Initialize failed";
		return KR_E_P11_MODULE;
	}
	t->initialized = rv == CKR_OK;
	return 0;
}

static int find_slot(struct p11_token *t, P11KitUri *uri, const char **ret_why)
{
	CK_SLOT_ID *slots = NULL, want = p11_kit_uri_get_slot_id(uri);
	CK_ULONG n = 0;
	int r = KR_E_P11_TOKEN;

	*ret_why = "pkcs11.token: no token matches the URI";
	if (t->f->C_GetSlotList(CK_TRUE, NULL, &n) != CKR_OK || n == 0)
		return r;
	slots = calloc(n, sizeof(*slots));
	if (!slots)
		return KR_E_NOMEM;
	if (t->f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		n = 0;
	for (CK_ULONG i = 0; i < n; i++) {
		CK_SLOT_INFO si;
		CK_TOKEN_INFO ti;

		if (want != (CK_SLOT_ID)-1 && slots[i] != want)
			continue;
		if (t->f->C_GetSlotInfo(slots[i], &si) != CKR_OK || !p11_kit_uri_match_slot_info(uri, &si) ||
		    t->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK || !p11_kit_uri_match_token_info(uri, &ti))
			continue;
		t->slot = slots[i];
		r = 0;
		break;
	}
	free(slots);
	return r;
}

int p11_open(const char *module, const char *token_uri, struct p11_token **ret, const char **ret_why)
{
	struct p11_token *t = calloc(1, sizeof(*t));
	P11KitUri *uri = p11_kit_uri_new();
	int r;

	if (!t || !uri) {
		r = KR_E_NOMEM;
		goto out;
	}
	if (p11_kit_uri_parse(token_uri ? token_uri : "pkcs11:", P11_KIT_URI_FOR_TOKEN | P11_KIT_URI_FOR_SLOT, uri) !=
	    P11_KIT_URI_OK) {
		*ret_why = "pkcs11.token: not a valid PKCS#11 URI";
		r = KR_E_CONFIG;
		goto out;
	}
	if ((r = load_functions(t, module, ret_why)) < 0 || (r = find_slot(t, uri, ret_why)) < 0)
		goto out;
	if (t->f->C_OpenSession(t->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &t->session) != CKR_OK) {
		*ret_why = "pkcs11.token: cannot open a session";
		r = KR_E_P11_TOKEN;
		goto out;
	}
	t->has_session = true;
out:
	if (uri)
		p11_kit_uri_free(uri);
	if (r < 0) {
		p11_close(t);
		return r;
	}
	*ret = t;
	return 0;
}

int p11_lock(const char *path, int *ret_fd, const char **ret_why)
{
	int fd;

	*ret_fd = -1;
	if (!path)
		return 0;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0) {
		*ret_why = "pkcs11.lock_file: cannot open the lock file";
		return KR_E_SYSTEM;
	}
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			close(fd);
			*ret_why = "pkcs11.lock_file: cannot lock";
			return KR_E_SYSTEM;
		}
	}
	*ret_fd = fd;
	return 0;
}

void p11_unlock(int fd)
{
	if (fd >= 0)
		close(fd); /* closing releases the lock */
}

void p11_close(struct p11_token *t)
{
	if (!t)
		return;
	if (t->has_session)
		t->f->C_CloseSession(t->session);
	if (t->initialized)
		t->f->C_Finalize(NULL);
	if (t->dl)
		dlclose(t->dl);
	free(t);
}

int p11_login(struct p11_token *t, const char *pin, size_t pin_len, const char **ret_why)
{
	CK_RV rv = t->f->C_Login(t->session, CKU_USER, (CK_UTF8CHAR *)pin, pin_len);

	if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN)
		return 0;
	*ret_why = rv == CKR_PIN_LOCKED ? "the user PIN is locked" : "login failed: wrong PIN";
	return KR_E_P11_PIN;
}

void p11_pin_free(char *pin, size_t len)
{
	if (!pin)
		return;
	explicit_bzero(pin, len);
	free(pin);
}

#define MAX_PIN 256

int p11_read_pin(const char *file, const char *credential, char **ret_pin, size_t *ret_len, const char **ret_why)
{
	char path[4096], *pin;
	const char *dir;
	size_t len;
	FILE *f;

	if (credential) {
		dir = getenv("CREDENTIALS_DIRECTORY");
		if (!dir || snprintf(path, sizeof(path), "%s/%s", dir, credential) >= (int)sizeof(path)) {
			*ret_why = "pkcs11.pin_credential: $CREDENTIALS_DIRECTORY is not set";
			return KR_E_P11_PIN;
		}
		file = path;
	}
	if (!file) {
		*ret_why = "no PIN configured (pkcs11.pin_file or pkcs11.pin_credential)";
		return KR_E_P11_PIN;
	}
	f = fopen(file, "re");
	if (!f) {
		*ret_why = credential ? "pkcs11.pin_credential: cannot read the credential"
				      : "pkcs11.pin_file: cannot read the PIN file";
		return KR_E_P11_PIN;
	}
	pin = calloc(1, MAX_PIN + 1);
	if (!pin) {
		fclose(f);
		return KR_E_NOMEM;
	}
	setvbuf(f, NULL, _IONBF, 0); /* no stdio buffer holding a copy */
	len = fread(pin, 1, MAX_PIN + 1, f);
	fclose(f);
	while (len > 0 && (pin[len - 1] == '\n' || pin[len - 1] == '\r'))
		len--;
	if (len == 0 || len > MAX_PIN) {
		p11_pin_free(pin, MAX_PIN + 1);
		*ret_why = "the PIN file is empty or too long";
		return KR_E_P11_PIN;
	}
	*ret_pin = pin;
	*ret_len = len;
	return 0;
}

/* A private key used through GnuTLS's external key interface. */
struct tls_key {
	struct p11_token *t;
	CK_OBJECT_HANDLE handle;
	CK_KEY_TYPE type;
	unsigned bits;
};

static int find_private_key(struct p11_token *t, const char *key_uri, CK_OBJECT_HANDLE *ret, const char **ret_why)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[3] = { { CKA_CLASS, &cls, sizeof(cls) } };
	CK_ULONG n_tmpl = 1, found = 0;
	CK_OBJECT_HANDLE handles[2];
	P11KitUri *uri = p11_kit_uri_new();
	CK_ATTRIBUTE *a;
	int r = KR_E_P11_NOT_FOUND;

	if (!uri)
		return KR_E_NOMEM;
	if (p11_kit_uri_parse(key_uri, P11_KIT_URI_FOR_OBJECT, uri) != P11_KIT_URI_OK) {
		*ret_why = "tls.key: not a valid PKCS#11 URI";
		r = KR_E_CONFIG;
		goto out;
	}
	if ((a = p11_kit_uri_get_attribute(uri, CKA_ID)))
		tmpl[n_tmpl++] = *a;
	if ((a = p11_kit_uri_get_attribute(uri, CKA_LABEL)))
		tmpl[n_tmpl++] = *a;
	if (n_tmpl == 1) {
		*ret_why = "tls.key: the URI must name the key by id= or object=";
		r = KR_E_CONFIG;
		goto out;
	}
	if (t->f->C_FindObjectsInit(t->session, tmpl, n_tmpl) != CKR_OK) {
		*ret_why = "tls.key: cannot search the token";
		r = KR_E_P11_FAILED;
		goto out;
	}
	if (t->f->C_FindObjects(t->session, handles, 2, &found) != CKR_OK)
		found = 0;
	t->f->C_FindObjectsFinal(t->session);
	if (found != 1) {
		*ret_why = found ? "tls.key: the URI matches more than one private key"
				 : "tls.key: no private key in the token matches the URI";
		goto out;
	}
	*ret = handles[0];
	r = 0;
out:
	p11_kit_uri_free(uri);
	return r;
}

static int key_info(gnutls_privkey_t pkey, unsigned flags, void *userdata)
{
	const struct tls_key *k = userdata;
	gnutls_pk_algorithm_t pk = k->type == CKK_RSA ? GNUTLS_PK_RSA : GNUTLS_PK_ECDSA;

	(void)pkey;
	if (flags & GNUTLS_PRIVKEY_INFO_PK_ALGO)
		return pk;
	if (flags & GNUTLS_PRIVKEY_INFO_PK_ALGO_BITS)
		return (int)k->bits;
	if (flags & GNUTLS_PRIVKEY_INFO_HAVE_SIGN_ALGO) {
		gnutls_sign_algorithm_t algo = GNUTLS_FLAGS_TO_SIGN_ALGO(flags);
		gnutls_pk_algorithm_t spk = gnutls_sign_get_pk_algorithm(algo);

		return spk == pk || (pk == GNUTLS_PK_RSA && spk == GNUTLS_PK_RSA_PSS);
	}
	return GNUTLS_E_UNKNOWN_ALGORITHM;
}

static bool is_pss(gnutls_sign_algorithm_t algo)
{
	switch (algo) {
	case GNUTLS_SIGN_RSA_PSS_SHA256:
	case GNUTLS_SIGN_RSA_PSS_SHA384:
	case GNUTLS_SIGN_RSA_PSS_SHA512:
	case GNUTLS_SIGN_RSA_PSS_RSAE_SHA256:
	case GNUTLS_SIGN_RSA_PSS_RSAE_SHA384:
	case GNUTLS_SIGN_RSA_PSS_RSAE_SHA512:
		return true;
	default:
		return false;
	}
}

/* RSA-PSS parameters for the hash of a signature algorithm. */
static int pss_params(gnutls_sign_algorithm_t algo, CK_RSA_PKCS_PSS_PARAMS *p)
{
	switch (gnutls_sign_get_hash_algorithm(algo)) {
	case GNUTLS_DIG_SHA256:
		*p = (CK_RSA_PKCS_PSS_PARAMS){ CKM_SHA256, CKG_MGF1_SHA256, 32 };
		return 0;
	case GNUTLS_DIG_SHA384:
		*p = (CK_RSA_PKCS_PSS_PARAMS){ CKM_SHA384, CKG_MGF1_SHA384, 48 };
		return 0;
	case GNUTLS_DIG_SHA512:
		*p = (CK_RSA_PKCS_PSS_PARAMS){ CKM_SHA512, CKG_MGF1_SHA512, 64 };
		return 0;
	default:
		return GNUTLS_E_UNKNOWN_ALGORITHM;
	}
}

/* GnuTLS hands over the hash (ECDSA, RSA-PSS) or the DigestInfo (RSA PKCS#1 v1.5). */
static int key_sign_hash(gnutls_privkey_t pkey, gnutls_sign_algorithm_t algo, void *userdata, unsigned flags,
			 const gnutls_datum_t *hash, gnutls_datum_t *signature)
{
	const struct tls_key *k = userdata;
	CK_FUNCTION_LIST *f = k->t->f;
	CK_RSA_PKCS_PSS_PARAMS pss;
	CK_MECHANISM mech = { k->type == CKK_RSA ? CKM_RSA_PKCS : CKM_ECDSA, NULL, 0 };
	CK_ULONG len = 0;
	uint8_t *raw = NULL;
	int r = GNUTLS_E_PK_SIGN_FAILED;

	(void)pkey;
	if (k->type == CKK_RSA && ((flags & GNUTLS_PRIVKEY_SIGN_FLAG_RSA_PSS) || is_pss(algo))) {
		if (pss_params(algo, &pss) < 0)
			return GNUTLS_E_UNKNOWN_ALGORITHM;
		mech = (CK_MECHANISM){ CKM_RSA_PKCS_PSS, &pss, sizeof(pss) };
	}
	if (f->C_SignInit(k->t->session, &mech, k->handle) != CKR_OK)
		return r;
	if (f->C_Sign(k->t->session, hash->data, hash->size, NULL, &len) != CKR_OK || len == 0 ||
	    !(raw = gnutls_malloc(len)) || f->C_Sign(k->t->session, hash->data, hash->size, raw, &len) != CKR_OK)
		goto out;
	if (k->type == CKK_RSA) {
		*signature = (gnutls_datum_t){ raw, (unsigned)len };
		return 0;
	}
	{ /* PKCS#11 gives r || s; TLS wants DER SEQUENCE { r, s } */
		gnutls_datum_t rd = { raw, (unsigned)len / 2 }, sd = { raw + len / 2, (unsigned)len / 2 };

		r = gnutls_encode_rs_value(signature, &rd, &sd);
	}
out:
	gnutls_free(raw);
	return r;
}

static void key_deinit(gnutls_privkey_t pkey, void *userdata)
{
	(void)pkey;
	free(userdata);
}

int p11_tls_privkey(struct p11_token *t, const char *key_uri, gnutls_privkey_t *ret, const char **ret_why)
{
	struct tls_key *k = calloc(1, sizeof(*k));
	CK_ATTRIBUTE attrs[] = { { CKA_KEY_TYPE, NULL, sizeof(CK_KEY_TYPE) }, { CKA_MODULUS, NULL, 0 } };
	gnutls_privkey_t pkey = NULL;
	int r;

	if (!k)
		return KR_E_NOMEM;
	k->t = t;
	attrs[0].pValue = &k->type;
	if ((r = find_private_key(t, key_uri, &k->handle, ret_why)) < 0)
		goto fail;
	/* The modulus length (unavailable for EC keys) gives an RSA key's size. */
	if (t->f->C_GetAttributeValue(t->session, k->handle, attrs, 2) != CKR_OK &&
	    t->f->C_GetAttributeValue(t->session, k->handle, attrs, 1) != CKR_OK) {
		*ret_why = "tls.key: cannot read the key type";
		r = KR_E_P11_FAILED;
		goto fail;
	}
	if (k->type != CKK_RSA && k->type != CKK_EC) {
		*ret_why = "tls.key: only RSA and EC keys can serve TLS";
		r = KR_E_CONFIG;
		goto fail;
	}
	k->bits = k->type == CKK_RSA && attrs[1].ulValueLen != CK_UNAVAILABLE_INFORMATION
			  ? (unsigned)attrs[1].ulValueLen * 8
			  : 0;
	if (gnutls_privkey_init(&pkey) < 0 ||
	    gnutls_privkey_import_ext4(pkey, k, NULL, key_sign_hash, NULL, key_deinit, key_info,
				       GNUTLS_PRIVKEY_IMPORT_AUTO_RELEASE) < 0) {
		*ret_why = "tls.key: GnuTLS refused the token key";
		r = KR_E_P11_FAILED;
		if (pkey)
			gnutls_privkey_deinit(pkey);
		goto fail;
	}
	*ret = pkey;
	return 0;
fail:
	free(k);
	return r;
}
