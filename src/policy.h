/* SPDX-License-Identifier: BSD-3-Clause */
/* The rules of who may do what: which "clients" entry a connection is, whether it
 * may run an operation or make a key of some algorithm and length, and which
 * objects it can see (its namespace). Pure decisions over the config; no I/O. Only
 * the gate (guard.c) asks them.
 *
 * A namespace lives in the token, in the CKA_ID of the keys a client makes: it
 * begins with the namespace's tag, the first POLICY_TAG_LEN bytes of SHA-256 of
 * "kmip-relay namespace " and the name. So every process on every host that
 * reaches the token sees the same namespaces, and deciding costs no token call. */
#ifndef KR_POLICY_H
#define KR_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "kmip.h"
#include "tls.h"

#define POLICY_TAG_LEN 8

/* The entry that a certificate or a credential identifies; NULL if none does. A
 * password_sha256 entry whose Password is wrong is no match; *ret_why says what
 * failed, for the log (never the password). Only for a config with clients. */
const struct cfg_client *policy_identify(const struct cfg *c, const struct tls_identity *id,
					 const struct kmip_header *h, const char **ret_why);

/* Whether the client's operations list has the operation. NULL (no clients
 * section) may do all. */
bool policy_operation_allowed(const struct cfg_client *cl, uint32_t operation);
/* Whether it may run operations that change the token (it is not read-only). */
bool policy_may_change(const struct cfg_client *cl);
/* Whether it may make or register a key of this KMIP algorithm and length (EC and
 * ECDSA being one). */
bool policy_key_allowed(const struct cfg_client *cl, uint32_t algorithm, int32_t length);

/* Whether it may see the object with this CKA_ID. */
bool policy_visible(const struct cfg *c, const struct cfg_client *cl, const uint8_t *id, size_t len);
/* Marks a new CKA_ID (at least POLICY_TAG_LEN bytes) as the client's, cl being one
 * of c's clients. */
int policy_tag_id(const struct cfg *c, const struct cfg_client *cl, uint8_t *id) KR_WUR;

#endif
