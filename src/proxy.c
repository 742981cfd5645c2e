/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

static const uint8_t v2_signature[PROXY_V2_SIG_LEN] = { '\r', '\n', '\r', '\n', '\0', '\r',
							 '\n', 'Q',  'U',  'I',  'T',  '\n' };
static const char v1_signature[] = "PROXY ";
#define V1_SIG_LEN (sizeof(v1_signature) - 1)

enum { V2_LOCAL = 0x0, V2_PROXY = 0x1, V2_TCP4 = 0x11, V2_TCP6 = 0x21 };

static size_t min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

/* The size of a v1 line whose start is buf: it ends at its first CR, which an LF
 * must follow, within PROXY_V1_MAX bytes. */
static int v1_size(const uint8_t *buf, size_t len, size_t *ret_size)
{
	for (size_t i = 0; i < min_size(len, PROXY_V1_MAX); i++) {
		if (buf[i] == '\n')
			return KR_E_PROXY_V1_SYNTAX;
		if (buf[i] != '\r')
			continue;
		if (i + 2 > PROXY_V1_MAX)
			return KR_E_PROXY_V1_TOO_LONG;
		if (i + 1 == len)
			return KR_E_PROXY_TRUNCATED;
		if (buf[i + 1] != '\n' || i + 2 < PROXY_MIN)
			return KR_E_PROXY_V1_SYNTAX;
		*ret_size = i + 2;
		return 0;
	}
	return len >= PROXY_V1_MAX ? KR_E_PROXY_V1_TOO_LONG : KR_E_PROXY_TRUNCATED;
}

int proxy_header_size(const uint8_t *buf, size_t len, size_t *ret_size)
{
	if (len == 0)
		return KR_E_PROXY_TRUNCATED;
	if (memcmp(buf, v2_signature, min_size(len, PROXY_V2_SIG_LEN)) == 0) {
		if (len < PROXY_V2_FIXED)
			return KR_E_PROXY_TRUNCATED;
		*ret_size = PROXY_V2_FIXED + ((size_t)buf[14] << 8 | buf[15]);
		return 0;
	}
	if (memcmp(buf, v1_signature, min_size(len, V1_SIG_LEN)) != 0)
		return KR_E_PROXY_MISSING;
	return v1_size(buf, len, ret_size);
}

/* The next space-separated field of a v1 line into out (NUL-terminated); the
 * cursor moves past it and, unless it is the last, past the one space after it.
 * A field too long for out is error_too_long. */
static int v1_field(const char **p, const char *end, bool last, char *out, size_t size, int error_too_long)
{
	const char *q = memchr(*p, ' ', (size_t)(end - *p));
	size_t n;

	if (!q)
		q = end;
	n = (size_t)(q - *p);
	if (n == 0 || last != (q == end) || memchr(*p, '\0', n))
		return KR_E_PROXY_V1_SYNTAX;
	if (n >= size)
		return error_too_long;
	memcpy(out, *p, n);
	out[n] = '\0';
	*p = last ? q : q + 1;
	return 0;
}

/* 0..65535 in plain decimal: digits only, no leading zero but in "0". */
static int v1_port(const char *s, uint16_t *ret)
{
	unsigned long v = 0;

	if (s[0] == '0' && s[1])
		return KR_E_PROXY_PORT;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return KR_E_PROXY_PORT;
		v = v * 10 + (unsigned long)(*p - '0');
		if (v > 65535)
			return KR_E_PROXY_PORT;
	}
	*ret = (uint16_t)v;
	return 0;
}

/* "PROXY TCP4 src dst sport dport\r\n", TCP6 alike, or "PROXY UNKNOWN...\r\n",
 * whose rest is ignored (a health check's). */
static int parse_v1(const uint8_t *buf, size_t size, struct proxy_header *ret)
{
	const char *p = (const char *)buf + V1_SIG_LEN, *end = (const char *)buf + size - 2;
	size_t n = (size_t)(end - p);
	struct proxy_header h = { .version = 1 };
	char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN], sport[6], dport[6];
	uint8_t src_addr[16], dst_addr[16];
	uint16_t port, unused;
	int family, r;

	if (n >= 7 && memcmp(p, "UNKNOWN", 7) == 0 && (n == 7 || p[7] == ' ')) {
		*ret = h;
		return 0;
	}
	if (n < 5 || (memcmp(p, "TCP4 ", 5) != 0 && memcmp(p, "TCP6 ", 5) != 0))
		return KR_E_PROXY_V1_SYNTAX;
	family = p[3] == '4' ? AF_INET : AF_INET6;
	p += 5;
	if ((r = v1_field(&p, end, false, src, sizeof(src), KR_E_PROXY_ADDRESS)) < 0 ||
	    (r = v1_field(&p, end, false, dst, sizeof(dst), KR_E_PROXY_ADDRESS)) < 0 ||
	    (r = v1_field(&p, end, false, sport, sizeof(sport), KR_E_PROXY_PORT)) < 0 ||
	    (r = v1_field(&p, end, true, dport, sizeof(dport), KR_E_PROXY_PORT)) < 0)
		return r;
	if (inet_pton(family, src, src_addr) != 1 || inet_pton(family, dst, dst_addr) != 1)
		return KR_E_PROXY_ADDRESS;
	if ((r = v1_port(sport, &port)) < 0 || (r = v1_port(dport, &unused)) < 0)
		return r;
	h.has_source = true;
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&h.source;

		in->sin_family = AF_INET;
		memcpy(&in->sin_addr, src_addr, 4);
		in->sin_port = htons(port);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&h.source;

		in6->sin6_family = AF_INET6;
		memcpy(&in6->sin6_addr, src_addr, 16);
		in6->sin6_port = htons(port);
	}
	*ret = h;
	return 0;
}

/* The 16-byte fixed part, then the addresses; TLVs after them are skipped. */
static int parse_v2(const uint8_t *buf, size_t size, struct proxy_header *ret)
{
	const uint8_t *block = buf + PROXY_V2_FIXED;
	size_t len = size - PROXY_V2_FIXED;
	struct proxy_header h = { .version = 2 };

	if (buf[12] >> 4 != 2 || ((buf[12] & 0xF) != V2_LOCAL && (buf[12] & 0xF) != V2_PROXY))
		return KR_E_PROXY_V2_COMMAND;
	/* LOCAL: the balancer's own connection; its address block means nothing. */
	if ((buf[12] & 0xF) == V2_LOCAL) {
		*ret = h;
		return 0;
	}
	if (buf[13] == V2_TCP4) {
		struct sockaddr_in *in = (struct sockaddr_in *)&h.source;

		if (len < 12)
			return KR_E_PROXY_V2_LENGTH;
		in->sin_family = AF_INET;
		memcpy(&in->sin_addr, block, 4);
		memcpy(&in->sin_port, block + 8, 2); /* both in network order */
	} else if (buf[13] == V2_TCP6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&h.source;

		if (len < 36)
			return KR_E_PROXY_V2_LENGTH;
		in6->sin6_family = AF_INET6;
		memcpy(&in6->sin6_addr, block, 16);
		memcpy(&in6->sin6_port, block + 32, 2);
	} else {
		return KR_E_PROXY_FAMILY;
	}
	h.has_source = true;
	*ret = h;
	return 0;
}

int proxy_parse(const uint8_t *buf, size_t len, struct proxy_header *ret)
{
	size_t size = 0;
	int r = proxy_header_size(buf, len, &size);

	if (r < 0)
		return r;
	if (size > len)
		return KR_E_PROXY_TRUNCATED;
	return buf[0] == v2_signature[0] ? parse_v2(buf, size, ret) : parse_v1(buf, size, ret);
}

bool proxy_trusted(const struct cfg_net *nets, size_t n, const struct sockaddr *addr)
{
	uint8_t bytes[16];
	int family;

	if (addr->sa_family == AF_INET) {
		family = AF_INET;
		memcpy(bytes, &((const struct sockaddr_in *)addr)->sin_addr, 4);
	} else if (addr->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)addr)->sin6_addr;

		family = IN6_IS_ADDR_V4MAPPED(a6) ? AF_INET : AF_INET6;
		memcpy(bytes, family == AF_INET ? a6->s6_addr + 12 : a6->s6_addr, family == AF_INET ? 4 : 16);
	} else {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		const struct cfg_net *net = &nets[i];
		unsigned whole = net->prefix / 8, rest = net->prefix % 8;

		if (net->family != family || memcmp(net->addr, bytes, whole) != 0)
			continue;
		if (rest == 0 || ((net->addr[whole] ^ bytes[whole]) & (uint8_t)(0xFF << (8 - rest))) == 0)
			return true;
	}
	return false;
}

static int wait_readable(int fd, uint64_t deadline_us)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint64_t now = now_us(), ms;
		int r;

		if (now >= deadline_us)
			return KR_E_PROXY_TIMEOUT;
		ms = (deadline_us - now + 999) / 1000;
		r = poll(&p, 1, ms > 60000 ? 60000 : (int)ms);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return KR_E_SYSTEM;
	}
}

/* Up to want bytes, at least one, by the deadline; KR_E_PROXY_TRUNCATED when the
 * peer closed. */
static int read_some(int fd, uint8_t *buf, size_t want, uint64_t deadline_us, size_t *ret_n)
{
	for (;;) {
		int r = wait_readable(fd, deadline_us);
		ssize_t n;

		if (r < 0)
			return r;
		n = read(fd, buf, want);
		if (n > 0) {
			*ret_n = (size_t)n;
			return 0;
		}
		if (n == 0 || errno == ECONNRESET)
			return KR_E_PROXY_TRUNCATED;
		if (errno != EINTR && errno != EAGAIN)
			return KR_E_SYSTEM;
	}
}

/* The header from a trusted peer: the shortest header's bytes, then one at a time
 * until its size is known (a v1 line at its CRLF, a v2 header at 16 bytes), then
 * exactly the rest. */
static int read_header(int fd, uint64_t deadline_us, struct proxy_header *ret)
{
	uint8_t head[PROXY_V1_MAX], *buf = head;
	size_t got = 0, size = 0, n = 0;
	int r;

	while ((r = proxy_header_size(head, got, &size)) == KR_E_PROXY_TRUNCATED) {
		r = read_some(fd, head + got, got < PROXY_MIN ? PROXY_MIN - got : 1, deadline_us, &n);
		if (r < 0)
			return r == KR_E_PROXY_TRUNCATED && got == 0 ? KR_E_PROXY_CLOSED : r;
		got += n;
	}
	if (r < 0)
		return r;
	if (size > sizeof(head)) {
		if (!(buf = malloc(size)))
			return KR_E_NOMEM;
		memcpy(buf, head, got);
	}
	while (got < size && (r = read_some(fd, buf + got, size - got, deadline_us, &n)) == 0)
		got += n;
	if (r == 0)
		r = proxy_parse(buf, size, ret);
	if (buf != head)
		free(buf);
	return r;
}

/* Looks at the first bytes from an untrusted peer without taking them: a header
 * there is refused; anything else is left to the TLS handshake, which also sees
 * a peer that sends nothing in time or closes. */
static int refuse_header(int fd, uint64_t deadline_us)
{
	uint8_t buf[PROXY_V2_SIG_LEN];
	size_t size;
	ssize_t n;
	int r = wait_readable(fd, deadline_us);

	if (r < 0)
		return r == KR_E_PROXY_TIMEOUT ? 0 : r;
	do
		n = recv(fd, buf, sizeof(buf), MSG_PEEK);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return 0;
	return proxy_header_size(buf, (size_t)n, &size) == KR_E_PROXY_MISSING ? 0 : KR_E_PROXY_UNTRUSTED;
}

int proxy_accept(int fd, const struct sockaddr *peer, const struct cfg_net *trusted, size_t n_trusted,
		 uint64_t deadline_us, struct proxy_header *ret)
{
	int r;

	if (proxy_trusted(trusted, n_trusted, peer))
		return read_header(fd, deadline_us, ret);
	/* A relay that trusts no balancer does not look: nothing changes for it. */
	if (n_trusted > 0 && (r = refuse_header(fd, deadline_us)) < 0)
		return r;
	*ret = (struct proxy_header){ 0 };
	return 0;
}
