/* The PKCS#11 backend: loads one module, selects a token by PKCS#11 URI (RFC 7512,
 * parsed by p11-kit), logs in, finds objects and signs. Knows nothing of the KMIP
 * wire format. */
#ifndef KR_P11_H
#define KR_P11_H

#include <gnutls/abstract.h>
#include <p11-kit/pkcs11.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"

struct p11_token;

/* dlopens module, initialises it and opens a session on the token that token_uri
 * selects. On failure *ret_why says what went wrong. */
int p11_open(const char *module, const char *token_uri, struct p11_token **ret, const char **ret_why) KR_WUR;
/* An exclusive flock() on path, held from before p11_open until after p11_login:
 * SoftHSM rewrites its token file on every login, and another process reading it
 * meanwhile finds no token. Returns the fd to pass to p11_unlock, or -1 with no
 * path. */
int p11_lock(const char *path, int *ret_fd, const char **ret_why) KR_WUR;
void p11_unlock(int fd);

/* C_Finalize and dlclose; accepts NULL. */
void p11_close(struct p11_token *t);

/* C_Login as CKU_USER. The caller wipes the PIN afterwards. */
int p11_login(struct p11_token *t, const char *pin, size_t pin_len, const char **ret_why) KR_WUR;

/* Reads the user PIN from a file or from a systemd credential (a file in
 * $CREDENTIALS_DIRECTORY), without its trailing newline. Free it with p11_pin_free,
 * which wipes it. */
int p11_read_pin(const char *file, const char *credential, char **ret_pin, size_t *ret_len,
		 const char **ret_why) KR_WUR;
void p11_pin_free(char *pin, size_t len);

/* A gnutls_privkey_t whose signatures are made by the private key that key_uri
 * (id= or object= of a pkcs11: URI) names in the token; the token must outlive it. */
int p11_tls_privkey(struct p11_token *t, const char *key_uri, gnutls_privkey_t *ret, const char **ret_why) KR_WUR;

#endif
