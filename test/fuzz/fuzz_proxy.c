/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

/* PROXY protocol headers (issue 14): the size of a header is known without a byte
 * past it and never changes as more bytes arrive; the parser agrees with it, looks
 * at no byte past the header (it gets a copy of exactly the header, so the
 * sanitizers see any read beyond), and what it accepts is an address of the
 * header's family that the trusted-network matcher places exactly. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PREFIXES_CHECKED 128 /* prefix lengths of a v1 line and then some */

static int parse_copy(const uint8_t *data, size_t len, struct proxy_header *ret)
{
	uint8_t *copy = malloc(len ? len : 1);
	int r;

	if (!copy)
		abort();
	memcpy(copy, data, len);
	r = proxy_parse(copy, len, ret);
	free(copy);
	return r;
}

/* The network of the source's first prefix bits matches it, for every prefix
 * length; with bit prefix-1 flipped it does not. */
static void check_trusted(const struct proxy_header *h)
{
	const struct sockaddr *sa = (const struct sockaddr *)&h->source;
	struct cfg_net net = { .family = sa->sa_family };
	uint8_t addr[16];
	unsigned max;

	if (sa->sa_family == AF_INET) {
		memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		max = 32;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a6)) /* matched as IPv4 */
			return;
		memcpy(addr, a6->s6_addr, 16);
		max = 128;
	} else {
		abort();
	}
	for (unsigned prefix = 0; prefix <= max; prefix++) {
		memset(net.addr, 0, sizeof(net.addr));
		for (unsigned bit = 0; bit < prefix; bit++)
			net.addr[bit / 8] |= addr[bit / 8] & (0x80 >> (bit % 8));
		net.prefix = prefix;
		if (!proxy_trusted(&net, 1, sa))
			abort();
		if (prefix > 0) {
			net.addr[(prefix - 1) / 8] ^= 0x80 >> ((prefix - 1) % 8);
			if (proxy_trusted(&net, 1, sa))
				abort();
		}
	}
}

/* A v1 address goes back to the text it came from, as inet_ntop writes it. */
static void check_source(const uint8_t *data, const struct proxy_header *h)
{
	const struct sockaddr *sa = (const struct sockaddr *)&h->source;
	char text[INET6_ADDRSTRLEN];
	uint8_t back[16];
	const void *addr = sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
						     : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;

	if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)
		abort();
	if (h->version == 1 && (sa->sa_family == AF_INET) != (data[9] == '4'))
		abort();
	if (!inet_ntop(sa->sa_family, addr, text, sizeof(text)) || inet_pton(sa->sa_family, text, back) != 1 ||
	    memcmp(back, addr, sa->sa_family == AF_INET ? 4 : 16) != 0)
		abort();
	check_trusted(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_header h, again;
	size_t hs = 0, later = 0;
	int r = proxy_header_size(data, size, &hs);
	int p;

	memset(&h, 0, sizeof(h));
	memset(&again, 0, sizeof(again));
	p = parse_copy(data, size, &h);
	/* What a prefix says: more is needed, or the same as the whole. */
	for (size_t i = 0; i < size && i < PREFIXES_CHECKED; i++) {
		int ri = proxy_header_size(data, i, &later);

		if (ri == 0 ? r != 0 || later != hs : ri != KR_E_PROXY_TRUNCATED && ri != r)
			abort();
	}
	if (r < 0) {
		if (p != r)
			abort();
		return 0;
	}
	if (hs < PROXY_MIN || (data[0] == 'P' && hs > PROXY_V1_MAX) || (data[0] != 'P' && hs < PROXY_V2_FIXED) ||
	    hs > PROXY_V2_FIXED + 65535)
		abort();
	if (hs > size) {
		if (p != KR_E_PROXY_TRUNCATED)
			abort();
		return 0;
	}
	/* Exactly the header: the same answer, from no byte past it. */
	if (parse_copy(data, hs, &again) != p || again.version != h.version || again.has_source != h.has_source ||
	    memcmp(&again.source, &h.source, sizeof(h.source)) != 0)
		abort();
	if (p == 0) {
		if (h.version != (data[0] == 'P' ? 1u : 2u))
			abort();
		if (h.has_source)
			check_source(data, &h);
	}
	return 0;
}
