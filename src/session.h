/* SPDX-License-Identifier: BSD-3-Clause */
/* One connection's request loop: read a framed TTLV message, decode it, run its
 * batch items, encode and send the response; until the client leaves or a limit
 * ends the connection. */
#ifndef KR_SESSION_H
#define KR_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "tls.h"
#include "token.h"

struct session_stats {
	unsigned requests;
	const char *end; /* why the connection ended */
	uint64_t handshake_us; /* the TLS handshake (main.c) */
	uint64_t first_us;     /* the first request: read to answered; 0: none */
};

/* peer is the client's "address:port" for the audit records and the log. */
void session_run(const struct cfg *c, bool trace, const char *peer, struct tls_conn *t, struct conn_token *ct,
		 struct session_stats *st);
/* The n requests of one connection of a client with the TLS identity id, each
 * answered as the loop would answer it (gate, operations, audit records), the
 * response handed to reply, without TLS or sockets: for the fuzzer that drives
 * whole requests through the gate. Stops at the first failure (reply's, or a
 * response that could not be made). */
int session_answer(const struct cfg *c, const struct tls_identity *id, struct conn_token *ct, const uint8_t *const *reqs,
		   const size_t *lens, size_t n, int (*reply)(void *arg, const uint8_t *resp, size_t len), void *arg) KR_WUR;

#endif
