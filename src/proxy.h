/* SPDX-License-Identifier: BSD-3-Clause */
/* The PROXY protocol (HAProxy's, versions 1 and 2): a balancer that took a
 * client's connection says, in a header before any other byte, whose connection
 * it is. The parser works on memory with strict bounds; the reader takes the
 * header from the raw socket before TLS, and never a byte past it. Knows nothing
 * of TLS or KMIP. */
#ifndef KR_PROXY_H
#define KR_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cfg.h"
#include "errors.h"

#define PROXY_V1_MAX 107    /* a v1 line's longest, CRLF included */
#define PROXY_MIN 15        /* the shortest header: "PROXY UNKNOWN\r\n" */
#define PROXY_V2_FIXED 16   /* a v2 header's signature, command, family and length */
#define PROXY_V2_SIG_LEN 12

struct proxy_header {
	unsigned version; /* 1 or 2 */
	/* false: a v2 LOCAL command or a v1 UNKNOWN line (a balancer's health check),
	 * for which the connection's own peer is the client */
	bool has_source;
	struct sockaddr_storage source; /* the client's address and port */
};

/* How long the header that buf (the len bytes that have arrived) begins is: 0
 * and *ret_size once buf holds enough of it to tell; KR_E_PROXY_TRUNCATED while
 * more bytes are needed to tell; KR_E_PROXY_MISSING if buf begins with
 * something else, KR_E_PROXY_V1_TOO_LONG or KR_E_PROXY_V1_SYNTAX if the v1 line
 * cannot end well. Never asks for a byte past the header: a v1 size is known
 * at its CRLF, a v2 size from its first 16 bytes. */
int proxy_header_size(const uint8_t *buf, size_t len, size_t *ret_size) KR_WUR;

/* Parses the header that buf (len bytes) begins: KR_E_PROXY_TRUNCATED if len is
 * shorter than it; no byte past it is looked at. v2 TLVs after the addresses
 * are skipped. *ret is set on success only. */
int proxy_parse(const uint8_t *buf, size_t len, struct proxy_header *ret) KR_WUR;

/* Whether addr (AF_INET, or AF_INET6 and IPv4-mapped counting as AF_INET) lies in
 * one of the n networks. */
bool proxy_trusted(const struct cfg_net *nets, size_t n, const struct sockaddr *addr);

/* What the connection on fd, whose peer is peer, says about its client, by
 * deadline_us (CLOCK_MONOTONIC, microseconds). From a trusted address it must
 * begin with a header, which is read through its last byte and no further;
 * *ret is set. From any other address nothing is read, and a connection whose
 * first bytes begin a header is refused (KR_E_PROXY_UNTRUSTED), unless
 * n_trusted is 0: then the first bytes are not even looked at (the TLS
 * handshake fails on a header). *ret says has_source false. Other errors: those of proxy_header_size and proxy_parse,
 * KR_E_PROXY_CLOSED, KR_E_PROXY_TRUNCATED, KR_E_PROXY_TIMEOUT, KR_E_SYSTEM. */
int proxy_accept(int fd, const struct sockaddr *peer, const struct cfg_net *trusted, size_t n_trusted,
		 uint64_t deadline_us, struct proxy_header *ret) KR_WUR;

#endif
