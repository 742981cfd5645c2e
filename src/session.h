/* One connection's request loop: read a framed TTLV message, decode it, run its
 * batch items, encode and send the response; until the client leaves or a limit
 * ends the connection. */
#ifndef KR_SESSION_H
#define KR_SESSION_H

#include <stdbool.h>

#include "cfg.h"
#include "tls.h"
#include "token.h"

struct session_stats {
	unsigned requests;
	const char *end; /* why the connection ended */
};

void session_run(const struct cfg *c, bool trace, struct tls_conn *t, struct conn_token *ct,
		 struct session_stats *st);

#endif
