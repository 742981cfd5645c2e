/* SPDX-License-Identifier: BSD-3-Clause */
/* The relay's own TLS key in the token: a gnutls_privkey_t whose signatures the
 * token makes through the relay's session, so that GnuTLS never loads a module. */
#ifndef KR_P11_TLSKEY_H
#define KR_P11_TLSKEY_H

#include <gnutls/abstract.h>

#include "p11.h"

/* key_uri names the private key by id= or object=; the token must outlive the key.
 * *ret_handle is the key's object handle. */
int p11_tls_privkey(struct p11_token *t, const char *key_uri, gnutls_privkey_t *ret, CK_OBJECT_HANDLE *ret_handle,
		    const char **ret_why) KR_WUR;

#endif
