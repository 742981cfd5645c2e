/* SPDX-License-Identifier: BSD-3-Clause */
/* Where the connection comes from: a systemd Accept=yes socket (fd 3, or stdin with
 * StandardInput=socket), inetd/xinetd (stdin), or one connection accepted on
 * --listen HOST:PORT. Knows nothing of TLS or KMIP. */
#ifndef KR_ACTIVATION_H
#define KR_ACTIVATION_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "errors.h"

enum act_mode {
	ACT_SYSTEMD,
	ACT_INETD,
	ACT_LISTEN,
};

struct activation {
	int fd;         /* the connection, close-on-exec, never 0, 1 or 2 */
	enum act_mode mode;
	char peer[64];  /* "address:port" of the client */
	struct sockaddr_storage peer_addr; /* the socket's peer; ss_family AF_UNSPEC if unknown */
};

/* "address:port", "[IPv6 address]:port", "unix" or "unknown" into out. */
void act_format_address(const struct sockaddr *sa, char *out, size_t len);

/* Takes the connection and points fds 0-2 at /dev/null (fd 2 stays the terminal
 * with --listen). listen_addr is NULL unless --listen was given; there, the
 * listener accepts exactly one connection and is closed. On failure, *ret_why says
 * what went wrong. */
int act_get_connection(const char *listen_addr, struct activation *ret, const char **ret_why) KR_WUR;

/* Binds and listens on HOST:PORT (IPv6 as [addr]:port); for --listen and tests. */
int act_listen(const char *addr, int *ret_fd, const char **ret_why) KR_WUR;

#endif
