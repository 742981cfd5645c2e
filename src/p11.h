/* SPDX-License-Identifier: BSD-3-Clause */
/* The PKCS#11 backend: loads one module, selects a token by PKCS#11 URI (RFC 7512,
 * parsed by p11-kit), logs in, finds objects and signs. Knows nothing of the KMIP
 * wire format. */
#ifndef KR_P11_H
#define KR_P11_H

#include <gnutls/gnutls.h>
#include <p11-kit/pkcs11.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "p11_call.h"

struct p11_token;

/* dlopens module and finds its functions, without initialising it: what p11_open
 * needs that no lock has to cover. */
int p11_load(const char *module, const struct p11_call_owner *owner, const char **ret_why) KR_WUR;
/* dlopens module (unless p11_load did), initialises it and opens a session on the token that token_uri
 * selects, or, with a username, the token whose label, slot ID or slot index it is
 * among those that one of the n_allow pkcs11: URIs in allow matches (none: no
 * token). A username that picks no such token is KR_E_P11_PIN, as a wrong PIN is.
 * On failure *ret_why says what went wrong. */
int p11_open(const char *module, const char *token_uri, const char *username, size_t username_len,
	     const char *const *allow, size_t n_allow, const struct p11_call_owner *owner, struct p11_token **ret,
	     const char **ret_why) KR_WUR;
/* The token's C_GetTokenInfo, read afresh (its flags say how the user PIN stands). */
int p11_token_info(struct p11_token *t, CK_TOKEN_INFO *ret) KR_WUR;
/* The module's C_GetInfo (its description and version), and the token's slot. */
int p11_module_info(struct p11_token *t, CK_INFO *ret) KR_WUR;
CK_SLOT_ID p11_slot(const struct p11_token *t);
/* An exclusive flock() on path, held from before p11_open until after p11_login
 * (SoftHSM rewrites its token file on every login, and another process reading it
 * meanwhile finds no token) and around metadata writes. A module call that hangs
 * while the lock is held would stall every connection; the call's deadline
 * (pkcs11.call_timeout, p11_call.h) ends the process, which releases it. *ret_fd
 * is the fd to pass to p11_unlock, or -1 with no path. Without create, a lock file
 * that does not exist is not made (no relay has run to share it with): a check run
 * as root must not leave one the service's user cannot open; nor is one waited for
 * that this user may not open (the check names that problem itself). */
int p11_lock(const char *path, bool create, int *ret_fd, const char **ret_why) KR_WUR;
void p11_unlock(int fd);

/* Closes the token's session; the last token of its module finalises and unloads
 * it. Accepts NULL. */
void p11_close(struct p11_token *t);

/* C_Login as CKU_USER. The caller wipes the PIN afterwards. */
int p11_login(struct p11_token *t, const char *pin, size_t pin_len, const char **ret_why) KR_WUR;

/* Reads the user PIN from a file or from a systemd credential (a file in
 * $CREDENTIALS_DIRECTORY), without its trailing newline. Free it with p11_pin_free,
 * which wipes it. */
int p11_read_pin(const char *file, const char *credential, char **ret_pin, size_t *ret_len,
		 const char **ret_why) KR_WUR;
void p11_pin_free(char *pin, size_t len);

/* Whether a CKR_ code says the device failed, not the request (KMIP's answer is
 * then another backend's to give): device errors and removal, a token or session
 * that is gone, and the generic CKR_GENERAL_ERROR and CKR_FUNCTION_FAILED. */
bool p11_device_class(CK_RV rv);
/* The first device-class code this token returned, or CKR_OK. A generic one
 * (CKR_GENERAL_ERROR, CKR_FUNCTION_FAILED), which a token also gives for a
 * request's own fault, counts only if C_GetTokenInfo then fails too; else it is
 * forgotten. */
CK_RV p11_device_failure(struct p11_token *t);
/* How many calls that may change the token (object creation, destruction and
 * attribute writes) this token has made. */
unsigned long p11_writes(const struct p11_token *t);

/* The last failing call's CKR_ code, and the name of a code ("CKR_KEY_SIZE_RANGE",
 * or in hex, "CKR_0x00000090", for one without a name here): static text. */
CK_RV p11_last_rv(const struct p11_token *t);
const char *p11_rv_name(CK_RV rv);
/* The name of a mechanism the relay uses ("CKM_ECDSA"). */
const char *p11_mechanism_name(CK_MECHANISM_TYPE m);

/* A hash's PKCS#11 mechanisms, by its GnuTLS digest: C_Digest, the signatures
 * that hash on the token (RSA PKCS#1 v1.5 and PSS, ECDSA), HMAC, and MGF1. */
struct p11_hash {
	gnutls_digest_algorithm_t dig;
	CK_MECHANISM_TYPE digest, rsa_pkcs, rsa_pss, ecdsa, hmac;
	CK_RSA_PKCS_MGF_TYPE mgf;
};
/* SHA-1 and SHA-2 only; NULL for any other digest. */
const struct p11_hash *p11_hash(gnutls_digest_algorithm_t dig);
/* A token's ECDSA signature (r || s, as PKCS#11 gives it) as DER SEQUENCE { r, s }
 * with minimal integers, which KMIP and TLS clients want; free der->data with
 * gnutls_free. */
int p11_ecdsa_der(const uint8_t *raw, size_t len, gnutls_datum_t *der) KR_WUR;

/* Whether the token lists mechanism m (C_GetMechanismList, once per connection). */
bool p11_has_mechanism(struct p11_token *t, CK_MECHANISM_TYPE m);

/* Object primitives; each returns 0 or the project error for the token's CKR_. */
int p11_find(struct p11_token *t, const CK_ATTRIBUTE *tmpl, size_t n, CK_OBJECT_HANDLE *out, size_t max,
	     size_t *ret_count) KR_WUR;
/* Every object that matches, however many, in a new array (free it). */
int p11_find_all(struct p11_token *t, const CK_ATTRIBUTE *tmpl, size_t n, CK_OBJECT_HANDLE **ret,
		 size_t *ret_count) KR_WUR;
int p11_get_attrs(struct p11_token *t, CK_OBJECT_HANDLE h, CK_ATTRIBUTE *tmpl, size_t n) KR_WUR;
/* One attribute's value in a new buffer (free it). */
int p11_get_attr_alloc(struct p11_token *t, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type, uint8_t **ret,
		       size_t *ret_len) KR_WUR;
int p11_set_attrs(struct p11_token *t, CK_OBJECT_HANDLE h, CK_ATTRIBUTE *tmpl, size_t n) KR_WUR;
int p11_create(struct p11_token *t, CK_ATTRIBUTE *tmpl, size_t n, CK_OBJECT_HANDLE *ret) KR_WUR;
int p11_destroy(struct p11_token *t, CK_OBJECT_HANDLE h) KR_WUR;
int p11_generate_key(struct p11_token *t, CK_MECHANISM *m, CK_ATTRIBUTE *tmpl, size_t n,
		     CK_OBJECT_HANDLE *ret) KR_WUR;
int p11_generate_key_pair(struct p11_token *t, CK_MECHANISM *m, CK_ATTRIBUTE *pub, size_t n_pub,
			  CK_ATTRIBUTE *priv, size_t n_priv, CK_OBJECT_HANDLE *ret_pub,
			  CK_OBJECT_HANDLE *ret_priv) KR_WUR;
/* C_SignInit and C_Sign into out, *inout_len bytes long; on return the signature's
 * length. */
int p11_sign(struct p11_token *t, CK_MECHANISM *m, CK_OBJECT_HANDLE key, const uint8_t *in, size_t in_len,
	     uint8_t *out, size_t *inout_len) KR_WUR;
/* 0 if the signature verifies, KR_E_P11_SIGNATURE if it does not. */
int p11_verify(struct p11_token *t, CK_MECHANISM *m, CK_OBJECT_HANDLE key, const uint8_t *in, size_t in_len,
	       const uint8_t *sig, size_t sig_len) KR_WUR;
/* One-part encryption and decryption; the result is a new buffer (wipe and free). */
int p11_encrypt(struct p11_token *t, CK_MECHANISM *m, CK_OBJECT_HANDLE key, const uint8_t *in, size_t in_len,
		uint8_t **ret, size_t *ret_len) KR_WUR;
int p11_decrypt(struct p11_token *t, CK_MECHANISM *m, CK_OBJECT_HANDLE key, const uint8_t *in, size_t in_len,
		uint8_t **ret, size_t *ret_len) KR_WUR;
/* A session of its own for a multi-part operation that stays open across requests:
 * PKCS#11 allows one encryption and one decryption at a time per session. The
 * login is the token's, so the session is logged in. */
int p11_session_open(struct p11_token *t, CK_SESSION_HANDLE *ret) KR_WUR;
void p11_session_close(struct p11_token *t, CK_SESSION_HANDLE s);
/* Multi-part encryption or decryption on such a session: init, updates, final. Each
 * output is a new buffer (wipe and free), possibly empty. A failure ends the
 * operation. */
int p11_crypt_init(struct p11_token *t, CK_SESSION_HANDLE s, bool encrypt, CK_MECHANISM *m,
		   CK_OBJECT_HANDLE key) KR_WUR;
int p11_crypt_update(struct p11_token *t, CK_SESSION_HANDLE s, bool encrypt, const uint8_t *in, size_t in_len,
		     uint8_t **ret, size_t *ret_len) KR_WUR;
int p11_crypt_final(struct p11_token *t, CK_SESSION_HANDLE s, bool encrypt, uint8_t **ret, size_t *ret_len) KR_WUR;
/* C_DigestInit and C_Digest, as p11_sign. */
int p11_digest(struct p11_token *t, CK_MECHANISM *m, const uint8_t *in, size_t in_len, uint8_t *out,
	       size_t *inout_len) KR_WUR;
int p11_random(struct p11_token *t, uint8_t *out, size_t len) KR_WUR;

#endif
