/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "policy.h"

#include <gnutls/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void namespace_tag(const char *name, uint8_t tag[POLICY_TAG_LEN])
{
	static const char prefix[] = "kmip-relay namespace ";
	uint8_t digest[32];
	gnutls_hash_hd_t h;

	memset(tag, 0, POLICY_TAG_LEN);
	if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0)
		return;
	gnutls_hash(h, prefix, sizeof(prefix) - 1);
	gnutls_hash(h, name, strlen(name));
	gnutls_hash_deinit(h, digest);
	memcpy(tag, digest, POLICY_TAG_LEN);
}

/* DNS names compare without regard to ASCII case (RFC 4343). */
static bool has_name(const struct tls_identity *id, const char *name)
{
	for (size_t i = 0; i < id->n_names; i++)
		if (strcasecmp(id->names[i], name) == 0)
			return true;
	return false;
}

static bool text_is(const struct kmip_text *t, const char *s)
{
	return t->ptr && t->len == strlen(s) && memcmp(t->ptr, s, t->len) == 0;
}

static bool password_matches(const struct cfg_client *cl, const struct kmip_text *password)
{
	uint8_t digest[32];
	bool same;

	if (gnutls_hash_fast(GNUTLS_DIG_SHA256, password->ptr ? password->ptr : "", password->len, digest) < 0)
		return false;
	same = gnutls_memcmp(digest, cl->password_sha256, sizeof(digest)) == 0;
	gnutls_memset(digest, 0, sizeof(digest));
	return same;
}

const struct cfg_client *policy_identify(const struct cfg *c, const struct tls_identity *id,
					 const struct kmip_header *h, const char **ret_why)
{
	const struct cfg_client *by_token = NULL;

	if (id->has_certificate) {
		for (size_t i = 0; i < c->n_clients; i++)
			if (c->clients[i].spki_sha256 && strcmp(c->clients[i].spki_sha256, id->spki_sha256) == 0)
				return &c->clients[i];
		/* A name means something only when the CA vouches for it. */
		for (size_t i = 0; id->ca_verified && i < c->n_clients; i++)
			if (c->clients[i].certificate_name && has_name(id, c->clients[i].certificate_name))
				return &c->clients[i];
	}
	if (h && h->username.ptr) {
		for (size_t i = 0; i < c->n_clients; i++) {
			const struct cfg_client *cl = &c->clients[i];

			if (cl->username_is_token)
				by_token = cl;
			if (!cl->username || !text_is(&h->username, cl->username))
				continue;
			if (cl->has_password_sha256 && !password_matches(cl, &h->password)) {
				*ret_why = "wrong password";
				return NULL;
			}
			return cl; /* with password_is_pin, C_Login judges the Password */
		}
		if (by_token)
			return by_token;
		*ret_why = "no clients entry has this username";
		return NULL;
	}
	*ret_why = id->has_certificate ? "no clients entry names this certificate"
				       : "no certificate and no Username and Password";
	return NULL;
}

bool policy_operation_allowed(const struct cfg_client *cl, uint32_t operation)
{
	if (!cl || !cl->operations)
		return true;
	for (size_t i = 0; i < cl->n_operations; i++)
		if (cl->operations[i] == operation)
			return true;
	return false;
}

bool policy_may_change(const struct cfg_client *cl)
{
	return !cl || !cl->read_only;
}

/* KMIP's EC and ECDSA name the same keys (Locate treats them as one too). */
static bool same_algorithm(uint32_t a, uint32_t b)
{
	enum { EC = 0x1A, ECDSA = 0x06 };

	return a == b || ((a == EC || a == ECDSA) && (b == EC || b == ECDSA));
}

bool policy_key_allowed(const struct cfg_client *cl, uint32_t algorithm, int32_t length)
{
	if (!cl || !cl->algorithms)
		return true;
	for (size_t i = 0; i < cl->n_algorithms; i++) {
		const struct cfg_algorithm *a = &cl->algorithms[i];

		if (!same_algorithm(a->algorithm, algorithm))
			continue;
		if (!a->lengths)
			return true;
		for (size_t j = 0; j < a->n_lengths; j++)
			if (a->lengths[j] == length)
				return true;
	}
	return false;
}

/* The tags of the config's namespaces, each client's and each "namespaces" entry's,
 * made once per process on first need: the config does not change, and these are
 * asked on every request that names an object. */
static struct tags {
	const struct cfg *cfg;
	uint8_t (*client)[POLICY_TAG_LEN], (*placed)[POLICY_TAG_LEN];
} tags;

/* NULL only when memory runs out. */
static const struct tags *tags_of(const struct cfg *c)
{
	if (tags.cfg != c) {
		free(tags.client);
		free(tags.placed);
		tags = (struct tags){ NULL, calloc(c->n_clients + 1, POLICY_TAG_LEN),
				      calloc(c->n_namespaces + 1, POLICY_TAG_LEN) };
		if (!tags.client || !tags.placed)
			return NULL;
		tags.cfg = c;
		for (size_t i = 0; i < c->n_clients; i++)
			namespace_tag(c->clients[i].namespace, tags.client[i]);
		for (size_t i = 0; i < c->n_namespaces; i++)
			namespace_tag(c->namespaces[i].name, tags.placed[i]);
	}
	return &tags;
}

static bool has_tag(const uint8_t tag[POLICY_TAG_LEN], const uint8_t *id, size_t len)
{
	return len >= POLICY_TAG_LEN && memcmp(id, tag, POLICY_TAG_LEN) == 0;
}

/* The namespace the config places a key in by its CKA_ID, or NULL. */
static const char *placed_in(const struct cfg *c, const uint8_t *id, size_t len)
{
	for (size_t i = 0; i < c->n_namespaces; i++)
		for (size_t j = 0; j < c->namespaces[i].n_ids; j++)
			if (c->namespaces[i].ids[j].len == len && memcmp(c->namespaces[i].ids[j].id, id, len) == 0)
				return c->namespaces[i].name;
	return NULL;
}

bool policy_visible(const struct cfg *c, const struct cfg_client *cl, const uint8_t *id, size_t len)
{
	const struct tags *t;
	const char *placed;

	if (!cl)
		return true;
	if ((placed = placed_in(c, id, len)))
		return strcmp(placed, cl->namespace) == 0;
	if (!(t = tags_of(c)))
		return false; /* out of memory: show nothing rather than too much */
	if (has_tag(t->client[cl - c->clients], id, len))
		return true;
	if (!cl->untagged_keys)
		return false;
	/* Untagged: no namespace the config knows has marked it. */
	for (size_t i = 0; i < c->n_clients; i++)
		if (has_tag(t->client[i], id, len))
			return false;
	for (size_t i = 0; i < c->n_namespaces; i++)
		if (has_tag(t->placed[i], id, len))
			return false;
	return true;
}

int policy_tag_id(const struct cfg *c, const struct cfg_client *cl, uint8_t *id)
{
	const struct tags *t;

	if (!cl)
		return 0;
	if (!(t = tags_of(c)))
		return KR_E_NOMEM;
	memcpy(id, t->client[cl - c->clients], POLICY_TAG_LEN);
	return 0;
}
