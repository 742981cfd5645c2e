/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include <gnutls/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "ops_crypto.h"

/* Encrypt and Decrypt: AES in CBC and ECB (PKCS#5 padding or none; the relay pads
 * ECB, which PKCS#11 has no padded mechanism for) and GCM; RSA with OAEP or PKCS#1
 * v1.5. An IV the client does not give is made by the token and returned. AES data
 * may also come in parts over several requests: a stream. */
#define GCM_IV_LEN 12
#define MAX_TAG 16

struct cipher {
	CK_MECHANISM mech;
	CK_GCM_PARAMS gcm;
	CK_RSA_PKCS_OAEP_PARAMS oaep;
	const uint8_t *iv; /* the client's, or made_iv */
	uint8_t made_iv[AES_BLOCK];
	size_t iv_len;
	bool iv_made;
};

/* What carries over from part to part: the relay's padding, and the GCM tag that
 * PKCS#11 keeps at the end of the ciphertext. */
struct crypt_state {
	bool encrypt, pad; /* pad: PKCS#5 padding by the relay (ECB) */
	CK_MECHANISM_TYPE mechanism;
	size_t tag_len;          /* GCM */
	uint8_t tag[MAX_TAG];    /* GCM decryption: given with the first part, fed after the last */
	size_t fed;              /* encryption with padding: the bytes so far */
	uint8_t held[AES_BLOCK]; /* decryption with padding: the last block, held back until the end */
	size_t n_held;
};

/* Returns KR_E_KMIP_FIELD_TYPE or KR_E_KMIP_MISSING with res set, or 0, or the
 * token's error. */
static int aes_cipher(struct store *st, const struct crypto_params *p, const struct ttlv_item *payload,
		      struct cipher *c, struct crypt_state *cs, struct ops_result *res)
{
	const struct ttlv_item *iv = ttlv_find(payload, KMIP_TAG_IV_COUNTER_NONCE);
	const struct ttlv_item *aad = ttlv_find(payload, KMIP_TAG_AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA);
	const struct ttlv_item *tag = ttlv_find(payload, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG);
	uint32_t mode = p->mode ? p->mode : MODE_CBC;
	uint32_t padding = p->padding ? p->padding : mode == MODE_CBC ? PAD_PKCS5 : PAD_NONE;
	int r;

	if ((mode != MODE_CBC && mode != MODE_ECB && mode != MODE_GCM) ||
	    (padding != PAD_NONE && (padding != PAD_PKCS5 || mode == MODE_GCM)))
		return KR_E_P11_MECHANISM;
	if (mode == MODE_ECB) {
		c->mech = (CK_MECHANISM){ CKM_AES_ECB, NULL, 0 };
		cs->pad = padding == PAD_PKCS5;
		return 0;
	}
	if (iv) {
		/* GCM takes an IV of any length the token takes; CBC's is one block. */
		if (iv->type != TTLV_BYTE_STRING || iv->len == 0 || (mode == MODE_CBC && iv->len != AES_BLOCK)) {
			ops_fail(res, KMIP_REASON_INVALID_FIELD, "IV/Counter/Nonce has the wrong length");
			return KR_E_KMIP_FIELD_TYPE;
		}
		c->iv = iv->value;
		c->iv_len = iv->len;
	} else if (!cs->encrypt) {
		/* Invalid Message, as the OASIS test cases CS-BC-M-11 to 13 expect; KMIP 2.1
		 * lists it for Decrypt beside Missing Initialization Vector. */
		ops_fail(res, KMIP_REASON_INVALID_MESSAGE, "decryption needs the IV/Counter/Nonce");
		return KR_E_KMIP_MISSING;
	} else {
		c->iv_len = mode == MODE_GCM ? GCM_IV_LEN : AES_BLOCK;
		if ((r = p11_random(st->tok, c->made_iv, c->iv_len)) < 0)
			return r;
		c->iv = c->made_iv;
		c->iv_made = true;
	}
	if (mode == MODE_CBC) {
		c->mech = (CK_MECHANISM){ padding == PAD_PKCS5 ? CKM_AES_CBC_PAD : CKM_AES_CBC, (void *)c->iv, c->iv_len };
		return 0;
	}
	cs->tag_len = p->tag_length >= 0 ? (size_t)p->tag_length : MAX_TAG;
	if (cs->tag_len < 4 || cs->tag_len > MAX_TAG) {
		/* General Failure, as the OASIS test case CS-BC-M-GCM-1 expects. */
		ops_fail(res, KMIP_REASON_GENERAL_FAILURE, "Tag Length must be 4 to 16 bytes");
		return KR_E_KMIP_FIELD_TYPE;
	}
	if (!cs->encrypt && (!tag || tag->type != TTLV_BYTE_STRING || tag->len != cs->tag_len)) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "GCM decryption needs the Authenticated Encryption Tag");
		return KR_E_KMIP_MISSING;
	}
	if (aad && aad->type != TTLV_BYTE_STRING) {
		ops_fail(res, KMIP_REASON_INVALID_FIELD, "Authenticated Encryption Additional Data must be a Byte String");
		return KR_E_KMIP_FIELD_TYPE;
	}
	if (!cs->encrypt)
		memcpy(cs->tag, tag->value, cs->tag_len);
	c->gcm = (CK_GCM_PARAMS){ (CK_BYTE *)c->iv, c->iv_len, c->iv_len * 8, NULL, 0, cs->tag_len * 8 };
	if (aad) {
		c->gcm.pAAD = (CK_BYTE *)aad->value;
		c->gcm.ulAADLen = aad->len;
	}
	c->mech = (CK_MECHANISM){ CKM_AES_GCM, &c->gcm, sizeof(c->gcm) };
	return 0;
}

static int rsa_cipher(const struct crypto_params *p, struct cipher *c)
{
	uint32_t padding = p->padding ? p->padding : PAD_OAEP;
	const struct p11_hash *h = crypto_hash(p->hash ? p->hash : HASH_SHA1);
	const struct p11_hash *mgf = crypto_hash(p->mgf_hash ? p->mgf_hash : p->hash ? p->hash : HASH_SHA1);

	if (padding == PAD_PKCS1_V15) {
		c->mech = (CK_MECHANISM){ CKM_RSA_PKCS, NULL, 0 };
		return 0;
	}
	if (padding != PAD_OAEP || !h || !mgf)
		return KR_E_P11_MECHANISM;
	/* The hashes and the label are passed on as asked: a token that lacks them says so. */
	c->oaep = (CK_RSA_PKCS_OAEP_PARAMS){ h->digest, mgf->mgf, CKZ_DATA_SPECIFIED,
					     p->p_source_len ? (void *)p->p_source : NULL, p->p_source_len };
	c->mech = (CK_MECHANISM){ CKM_RSA_PKCS_OAEP, &c->oaep, sizeof(c->oaep) };
	return 0;
}

/* The length of the PKCS#5 padding that ends block, or 0 if there is none. Every
 * byte is looked at whatever the padding, so that the time taken tells little. */
static size_t pkcs5_padding(const uint8_t block[AES_BLOCK])
{
	unsigned n = block[AES_BLOCK - 1], bad = (n == 0) | (n > AES_BLOCK);

	for (unsigned i = 0; i < AES_BLOCK; i++)
		bad |= (AES_BLOCK - 1 - i < n) & (block[i] != n);
	return bad ? 0 : n;
}

static void buf_free(uint8_t *p, size_t len)
{
	if (p)
		explicit_bzero(p, len);
	free(p);
}

/* a || b in a new buffer (NULL on failure); frees both, wiped. */
static int join(uint8_t *a, size_t a_len, uint8_t *b, size_t b_len, uint8_t **ret, size_t *ret_len)
{
	uint8_t *both = malloc(a_len + b_len + 1);

	if (both && a_len)
		memcpy(both, a, a_len);
	if (both && b_len)
		memcpy(both + a_len, b, b_len);
	buf_free(a, a_len);
	buf_free(b, b_len);
	*ret = both;
	*ret_len = both ? a_len + b_len : 0;
	return both ? 0 : KR_E_NOMEM;
}

/* A part's input for the token: the data and, after the last part's, the relay's
 * padding (encryption) or the GCM tag (decryption). */
static int part_input(struct crypt_state *cs, const uint8_t *data, size_t len, bool last, uint8_t **ret,
		      size_t *ret_len)
{
	size_t n_extra = 0;
	uint8_t *in;

	if (last && cs->encrypt && cs->pad)
		n_extra = AES_BLOCK - (cs->fed + len) % AES_BLOCK;
	else if (last && !cs->encrypt)
		n_extra = cs->tag_len;
	if (!(in = malloc(len + n_extra + 1)))
		return KR_E_NOMEM;
	if (len)
		memcpy(in, data, len);
	if (cs->encrypt)
		memset(in + len, (int)n_extra, n_extra);
	else
		memcpy(in + len, cs->tag, n_extra);
	cs->fed = (cs->fed + len) % AES_BLOCK;
	*ret = in;
	*ret_len = len + n_extra;
	return 0;
}

/* Decryption with the relay's padding: the token's output *inout (of *inout_size
 * bytes) gains the block held back from the part before; the data are all but its
 * last block, which is held back in turn, or at the last part all but the padding.
 * false with res set if there is none. */
static bool unpad(struct crypt_state *cs, bool last, uint8_t **inout, size_t *inout_size, size_t *ret_len,
		  struct ops_result *res)
{
	uint8_t *held = malloc(AES_BLOCK);
	size_t n, pad;

	if (held)
		memcpy(held, cs->held, cs->n_held);
	if (!held || join(held, cs->n_held, *inout, *inout_size, inout, inout_size) < 0) {
		ops_fail_err(res, KR_E_NOMEM);
		return false;
	}
	n = *inout_size;
	explicit_bzero(cs->held, sizeof(cs->held));
	cs->n_held = 0;
	if (!last) {
		cs->n_held = n < AES_BLOCK ? n : AES_BLOCK;
		memcpy(cs->held, *inout + n - cs->n_held, cs->n_held);
		*ret_len = n - cs->n_held;
		return true;
	}
	if (n < AES_BLOCK || !(pad = pkcs5_padding(*inout + n - AES_BLOCK))) {
		ops_fail(res, KMIP_REASON_CRYPTOGRAPHIC_FAILURE, "the decrypted data does not end in PKCS#5 padding");
		return false;
	}
	*ret_len = n - pad;
	return true;
}

/* Streams: a multi-part Encrypt or Decrypt keeps its PKCS#11 operation on a session
 * of its own from the request with the Init Indicator to the one with the Final
 * Indicator; the requests between name it by its Correlation Value. A failure ends
 * the stream. They are the connection's: ops_end_connection ends those it left
 * open. */
#define MAX_STREAMS 4
#define CORRELATION_LEN 16

static struct stream {
	bool open;
	uint8_t correlation[CORRELATION_LEN];
	CK_SESSION_HANDLE session;
	struct store_obj key;
	struct crypt_state cs;
} streams[MAX_STREAMS];

static struct stream *stream_start(struct store *st, const struct store_obj *o, struct cipher *c,
				   const struct crypt_state *cs, struct ops_result *res)
{
	struct stream *sm = NULL;
	int r;

	for (size_t i = 0; i < MAX_STREAMS && !sm; i++)
		if (!streams[i].open)
			sm = &streams[i];
	if (!sm) {
		ops_fail(res, KMIP_REASON_SERVER_LIMIT_EXCEEDED, "at most 4 Encrypt and Decrypt streams at a time");
		return NULL;
	}
	if (gnutls_rnd(GNUTLS_RND_NONCE, sm->correlation, CORRELATION_LEN) < 0) {
		ops_fail_err(res, KR_E_P11_FAILED);
		return NULL;
	}
	if ((r = p11_session_open(st->tok, &sm->session)) < 0) {
		crypto_fail(st, o, r, res);
		return NULL;
	}
	if ((r = p11_crypt_init(st->tok, sm->session, cs->encrypt, &c->mech, o->handle)) < 0) {
		p11_session_close(st->tok, sm->session);
		crypto_fail(st, o, r, res);
		return NULL;
	}
	sm->open = true;
	sm->key = *o;
	sm->cs = *cs;
	return sm;
}

static void stream_end(struct store *st, struct stream *sm)
{
	p11_session_close(st->tok, sm->session);
	explicit_bzero(sm, sizeof(*sm));
}

/* The stream that a later part names, and its key (which the request may name
 * too). A request that names a stream but is refused ends it. */
static struct stream *stream_of(struct ops_ctx *ctx, const struct ttlv_item *payload, const struct ttlv_item *corr,
				bool encrypt, struct store **ret_st, struct store_obj *o, struct ops_result *res)
{
	struct stream *sm = NULL;

	for (size_t i = 0; i < MAX_STREAMS && !sm; i++)
		if (streams[i].open && streams[i].cs.encrypt == encrypt && corr->type == TTLV_BYTE_STRING &&
		    corr->len == CORRELATION_LEN && memcmp(corr->value, streams[i].correlation, CORRELATION_LEN) == 0)
			sm = &streams[i];
	if (!sm) {
		ops_fail(res, KMIP_REASON_INVALID_CORRELATION_VALUE,
			 encrypt ? "no Encrypt stream has this Correlation Value" : "no Decrypt stream has this Correlation Value");
		return NULL;
	}
	if (!(*ret_st = ops_store_at(ctx, sm->key.backend, res))) { /* open, unless it failed meanwhile */
		explicit_bzero(sm, sizeof(*sm));
		return NULL;
	}
	*o = sm->key;
	if (crypto_indicator(payload, KMIP_TAG_INIT_INDICATOR) ||
	    ttlv_find(payload, KMIP_TAG_AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA) ||
	    ttlv_find(payload, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG))
		ops_fail(res, KMIP_REASON_INVALID_FIELD,
			 "Init Indicator, additional data and tag belong in a stream's first request");
	else if (!ctx->has_target)
		ops_acted_on(ctx, o);
	else if (strcmp(ctx->target.uid, sm->key.uid) != 0)
		ops_fail(res, KMIP_REASON_INVALID_CORRELATION_VALUE, "the Correlation Value is of a stream with another key");
	if (res->reason) {
		stream_end(*ret_st, sm);
		return NULL;
	}
	return sm;
}

/* The key and the operation of a request that begins one: the cipher, and the state
 * that later parts carry. */
static bool cipher_begin(struct ops_ctx *ctx, const struct ttlv_item *payload, struct store **ret_st,
			 struct store_obj *o, struct key_policy **ret_kp, struct cipher *c, struct crypt_state *cs,
			 struct ops_result *res)
{
	struct crypto_params p;
	int r;

	if (!crypto_read_params(payload, &p, res) || !ops_target(ctx, ret_st, o, res))
		return false;
	if ((o->key_type != CKK_AES || o->kind != STORE_SECRET) &&
	    (o->key_type != CKK_RSA || o->kind != (cs->encrypt ? STORE_PUBLIC : STORE_PRIVATE))) {
		ops_fail(res, KMIP_REASON_INVALID_OBJECT_TYPE,
			 cs->encrypt ? "Encrypt needs an AES key or an RSA public key"
				     : "Decrypt needs an AES key or an RSA private key");
		return false;
	}
	if (!(*ret_kp = crypto_key_for(*ret_st, o, cs->encrypt ? PROTECT : PROCESS, &p, res)))
		return false;
	r = o->key_type == CKK_AES ? aes_cipher(*ret_st, &p, payload, c, cs, res) : rsa_cipher(&p, c);
	if (r == KR_E_KMIP_FIELD_TYPE || r == KR_E_KMIP_MISSING)
		return false; /* res is set */
	if (r < 0) {
		crypto_fail(*ret_st, o, r, res);
		return false;
	}
	cs->mechanism = ctx->mechanism = c->mech.mechanism;
	return true;
}

/* The response: out is the data, then a GCM encryption's tag; a stream that goes
 * on gets its Correlation Value. */
static void put_cipher_result(struct ttlv_writer *w, const struct store_obj *o, const uint8_t *out, size_t len,
			      size_t tag_len, const struct cipher *c, const struct stream *going_on)
{
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o->uid);
	ttlv_put_bytes(w, KMIP_TAG_DATA, out, len);
	if (c->iv_made)
		ttlv_put_bytes(w, KMIP_TAG_IV_COUNTER_NONCE, c->iv, c->iv_len);
	if (going_on)
		ttlv_put_bytes(w, KMIP_TAG_CORRELATION_VALUE, going_on->correlation, CORRELATION_LEN);
	if (tag_len)
		ttlv_put_bytes(w, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, out + len, tag_len);
	ttlv_end(w);
}

/* One request of an Encrypt or Decrypt: the whole operation, or a part of a stream
 * (the first with the Init Indicator, the last with the Final Indicator). */
static void cipher_op(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		      struct ops_result *res, bool encrypt)
{
	const struct ttlv_item *data = ttlv_find(payload, KMIP_TAG_DATA);
	const struct ttlv_item *corr = ttlv_find(payload, KMIP_TAG_CORRELATION_VALUE);
	bool init = crypto_indicator(payload, KMIP_TAG_INIT_INDICATOR), final = crypto_indicator(payload, KMIP_TAG_FINAL_INDICATOR);
	struct crypt_state one = { .encrypt = encrypt }, *cs = &one;
	struct cipher c = { 0 };
	struct stream *sm = NULL;
	struct key_policy *kp;
	struct store *st;
	struct store_obj o;
	uint8_t *in = NULL, *out = NULL, *tail = NULL;
	size_t in_size = 0, out_size = 0, tail_size = 0, out_len, tag_len = 0, data_len;
	bool last;
	int r;

	/* Data may be left out of a stream's first and last requests only. */
	if (data ? data->type != TTLV_BYTE_STRING : !(corr ? final : init)) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, encrypt ? "Encrypt needs Data" : "Decrypt needs Data");
		return;
	}
	if (!corr && final && !init) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "a Final Indicator ends the stream its Correlation Value names");
		return;
	}
	data_len = data ? data->len : 0;
	if (corr) {
		if (!(sm = stream_of(ctx, payload, corr, encrypt, &st, &o, res)))
			return;
		cs = &sm->cs;
		ctx->mechanism = cs->mechanism;
		kp = crypto_key_for(st, &o, encrypt ? PROTECT : PROCESS, NULL, res);
	} else if (!cipher_begin(ctx, payload, &st, &o, &kp, &c, cs, res)) {
		return;
	} else if (init && !final && o.key_type != CKK_AES) {
		ops_fail(res, KMIP_REASON_FEATURE_NOT_SUPPORTED, "RSA encrypts and decrypts in one part");
		return;
	}
	if (!kp || (encrypt && kp->limited && !crypto_take_usage(st, &o, kp, data_len, sm ? 0 : 1, res)))
		goto out;
	if (init && !final && !(sm = stream_start(st, &o, &c, cs, res)))
		goto out;
	cs = sm ? &sm->cs : cs;
	last = !sm || final;
	r = part_input(cs, data ? data->value : NULL, data_len, last, &in, &in_size);
	if (r == 0 && !sm)
		r = encrypt ? p11_encrypt(st->tok, &c.mech, o.handle, in, in_size, &out, &out_size)
			    : p11_decrypt(st->tok, &c.mech, o.handle, in, in_size, &out, &out_size);
	else if (r == 0 && in_size) /* SoftHSM sizes an empty CBC_PAD part's output at SIZE_MAX */
		r = p11_crypt_update(st->tok, sm->session, encrypt, in, in_size, &out, &out_size);
	if (r == 0 && sm && final && (r = p11_crypt_final(st->tok, sm->session, encrypt, &tail, &tail_size)) == 0)
		r = join(out, out_size, tail, tail_size, &out, &out_size);
	if (r < 0) {
		crypto_fail(st, &o, r, res);
		goto out;
	}
	out_len = out_size;
	if (cs->pad && !encrypt && !unpad(cs, last, &out, &out_size, &out_len, res))
		goto out;
	if (encrypt && last && cs->tag_len) {
		if (out_len < cs->tag_len) {
			ops_fail(res, KMIP_REASON_CRYPTOGRAPHIC_FAILURE, "the token returned no tag");
			goto out;
		}
		tag_len = cs->tag_len;
	}
	put_cipher_result(w, &o, out, out_len - tag_len, tag_len, &c, last ? NULL : sm);
out:
	if (sm && (final || res->reason))
		stream_end(st, sm);
	buf_free(in, in_size);
	buf_free(out, out_size);
}

void ops_end_connection(struct conn_token *ct)
{
	for (size_t i = 0; i < MAX_STREAMS; i++)
		if (streams[i].open) {
			int b = streams[i].key.backend;

			if (b >= 0 && (size_t)b < ct->n && ct->b[b].tok)
				p11_session_close(ct->b[b].tok, streams[i].session);
			explicit_bzero(&streams[i], sizeof(streams[i]));
		}
}

void op_encrypt(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	cipher_op(ctx, payload, w, res, true);
}

void op_decrypt(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	cipher_op(ctx, payload, w, res, false);
}
