/* SPDX-License-Identifier: BSD-3-Clause */
/* Unit tests for the PROXY protocol module (issue 14): the v1 and v2 parsers on
 * exact byte vectors, each way a header can be malformed with its own error,
 * the size of a header known without a byte past it, the trusted networks, and
 * the reader on a socket pair: it takes the header and not one byte more, and
 * an untrusted peer's bytes stay unread. */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proxy.h"

#define LIT(s) (const uint8_t *)(s), sizeof(s) - 1

static const uint8_t sig[PROXY_V2_SIG_LEN] = "\r\n\r\n\0\r\nQUIT\n";

/* A v2 header: the signature, ver_cmd, family, then block (len bytes) after the
 * 2-byte length. Returns its size. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t family, const uint8_t *block, size_t len)
{
	memcpy(out, sig, sizeof(sig));
	out[12] = ver_cmd;
	out[13] = family;
	out[14] = (uint8_t)(len >> 8);
	out[15] = (uint8_t)len;
	if (len)
		memcpy(out + 16, block, len);
	return 16 + len;
}

/* 192.0.2.10:56324 -> 198.51.100.1:5696 */
static const uint8_t tcp4_block[12] = { 192, 0, 2, 10, 198, 51, 100, 1, 0xDC, 0x04, 0x16, 0x40 };

static void assert_ipv4(const struct proxy_header *h, const char *addr, unsigned port)
{
	const struct sockaddr_in *in = (const struct sockaddr_in *)&h->source;
	char text[INET_ADDRSTRLEN];

	ck_assert(h->has_source);
	ck_assert_int_eq(in->sin_family, AF_INET);
	ck_assert_ptr_nonnull(inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)));
	ck_assert_str_eq(text, addr);
	ck_assert_uint_eq(ntohs(in->sin_port), port);
}

static void assert_ipv6(const struct proxy_header *h, const char *addr, unsigned port)
{
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&h->source;
	char text[INET6_ADDRSTRLEN];

	ck_assert(h->has_source);
	ck_assert_int_eq(in6->sin6_family, AF_INET6);
	ck_assert_ptr_nonnull(inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text)));
	ck_assert_str_eq(text, addr);
	ck_assert_uint_eq(ntohs(in6->sin6_port), port);
}

/* A prefix of a whole header asks for more until the size can be known (a v1
 * line at its CRLF, a v2 header at 16 bytes); from then on, and with bytes after
 * the header, the size is the header's. */
static void assert_size(const uint8_t *buf, size_t len)
{
	uint8_t more[PROXY_V1_MAX + 64];
	size_t known_at = buf[0] == 'P' ? len : PROXY_V2_FIXED, size = 12345;

	for (size_t i = 0; i < len; i++) {
		if (i < known_at) {
			ck_assert_int_eq(proxy_header_size(buf, i, &size), KR_E_PROXY_TRUNCATED);
			ck_assert_uint_eq(size, 12345);
		} else {
			ck_assert_int_eq(proxy_header_size(buf, i, &size), 0);
			ck_assert_uint_eq(size, len);
			size = 12345;
		}
	}
	ck_assert_int_eq(proxy_header_size(buf, len, &size), 0);
	ck_assert_uint_eq(size, len);
	ck_assert_uint_le(len + 8, sizeof(more));
	memcpy(more, buf, len);
	memcpy(more + len, "\x16\x03\x01\x02\x00\r\n\n", 8);
	size = 0;
	ck_assert_int_eq(proxy_header_size(more, len + 8, &size), 0);
	ck_assert_uint_eq(size, len);
}

START_TEST(test_v1_tcp4)
{
	static const char line[] = "PROXY TCP4 192.0.2.10 198.51.100.1 56324 5696\r\n";
	struct proxy_header h;

	assert_size(LIT(line));
	ck_assert_int_eq(proxy_parse(LIT(line), &h), 0);
	ck_assert_uint_eq(h.version, 1);
	assert_ipv4(&h, "192.0.2.10", 56324);
}
END_TEST

START_TEST(test_v1_tcp6)
{
	static const char line[] = "PROXY TCP6 2001:db8::1 2001:db8::2 40000 5696\r\n";
	struct proxy_header h;

	assert_size(LIT(line));
	ck_assert_int_eq(proxy_parse(LIT(line), &h), 0);
	assert_ipv6(&h, "2001:db8::1", 40000);
}
END_TEST

START_TEST(test_v1_unknown)
{
	/* The longest line there is: UNKNOWN with two full IPv6 addresses, 107 bytes. */
	static const char longest[] = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
				      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	static const char too_long[] = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
				       "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 655350\r\n";
	struct proxy_header h = { .has_source = true };
	size_t size;

	ck_assert_uint_eq(sizeof(longest) - 1, PROXY_V1_MAX);
	assert_size(LIT("PROXY UNKNOWN\r\n"));
	ck_assert_int_eq(proxy_parse(LIT("PROXY UNKNOWN\r\n"), &h), 0);
	ck_assert_uint_eq(h.version, 1);
	ck_assert(!h.has_source);
	assert_size(LIT(longest));
	h.has_source = true;
	ck_assert_int_eq(proxy_parse(LIT(longest), &h), 0);
	ck_assert(!h.has_source);
	ck_assert_int_eq(proxy_header_size(LIT(too_long), &size), KR_E_PROXY_V1_TOO_LONG);
	ck_assert_int_eq(proxy_parse(LIT(too_long), &h), KR_E_PROXY_V1_TOO_LONG);
}
END_TEST

START_TEST(test_v1_malformed)
{
	static const struct {
		const char *line;
		int error;
	} bad[] = {
		{ "PROXY TCP4 192.0.2.10 198.51.100.1 56324 5696\n", KR_E_PROXY_V1_SYNTAX },   /* LF without CR */
		{ "PROXY TCP4 192.0.2.10 198.51.100.1 56324 5696\rX", KR_E_PROXY_V1_SYNTAX },  /* CR without LF */
		{ "PROXY TCP4 192.0.2.10  198.51.100.1 56324 5696\r\n", KR_E_PROXY_V1_SYNTAX }, /* two spaces */
		{ "PROXY TCP4 192.0.2.10 198.51.100.1 56324 5696 \r\n", KR_E_PROXY_V1_SYNTAX }, /* trailing space */
		{ "PROXY TCP4 192.0.2.10 198.51.100.1 56324\r\n", KR_E_PROXY_V1_SYNTAX },      /* a field short */
		{ "PROXY TCP4 192.0.2.10 198.51.100.1 56324 5696 1\r\n", KR_E_PROXY_V1_SYNTAX }, /* one too many */
		{ "PROXY TCP5 192.0.2.10 198.51.100.1 56324 5696\r\n", KR_E_PROXY_V1_SYNTAX },
		{ "PROXY tcp4 192.0.2.10 198.51.100.1 56324 5696\r\n", KR_E_PROXY_V1_SYNTAX },
		{ "PROXY UNKNOWNX\r\n", KR_E_PROXY_V1_SYNTAX },
		{ "PROXY \r\n", KR_E_PROXY_V1_SYNTAX },      /* shorter than any header */
		{ "PROXY TCP4\r\n", KR_E_PROXY_V1_SYNTAX },
		{ "PROXY TCP4 2001:db8::1 198.51.100.1 56324 5696\r\n", KR_E_PROXY_ADDRESS }, /* family */
		{ "PROXY TCP6 192.0.2.10 2001:db8::2 56324 5696\r\n", KR_E_PROXY_ADDRESS },
		{ "PROXY TCP4 192.0.2.256 198.51.100.1 56324 5696\r\n", KR_E_PROXY_ADDRESS },
		{ "PROXY TCP4 192.0.2.10 198.51.100 56324 5696\r\n", KR_E_PROXY_ADDRESS },  /* the destination too */
		{ "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff:f ::1 1 2\r\n", KR_E_PROXY_ADDRESS },
		{ "PROXY TCP4 192.0.2.10 198.51.100.1 65536 5696\r\n", KR_E_PROXY_PORT },
		{ "PROXY TCP4 192.0.2.10 198.51.100.1 056324 5696\r\n", KR_E_PROXY_PORT },  /* too long, too */
		{ "PROXY TCP4 192.0.2.10 198.51.100.1 0123 5696\r\n", KR_E_PROXY_PORT },    /* leading zero */
		{ "PROXY TCP4 192.0.2.10 198.51.100.1 +123 5696\r\n", KR_E_PROXY_PORT },
		{ "PROXY TCP4 192.0.2.10 198.51.100.1 56324 0x16\r\n", KR_E_PROXY_PORT },
	};
	struct proxy_header h = { .version = 77 };
	size_t size;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const uint8_t *line = (const uint8_t *)bad[i].line;
		size_t len = strlen(bad[i].line);
		int r = proxy_header_size(line, len, &size);

		if (r == 0)
			r = proxy_parse(line, len, &h);
		ck_assert_msg(r == bad[i].error, "%s: %d, not %d", bad[i].line, r, bad[i].error);
		ck_assert_uint_eq(h.version, 77); /* untouched */
	}
}
END_TEST

START_TEST(test_v1_embedded_nul)
{
	/* inet_pton would stop at the NUL and read "192.0.2.10". */
	static const char line[] = "PROXY TCP4 192.0.2.10\0x 198.51.100.1 56324 5696\r\n";
	struct proxy_header h;

	ck_assert_int_eq(proxy_parse(LIT(line), &h), KR_E_PROXY_V1_SYNTAX);
}
END_TEST

START_TEST(test_not_a_header)
{
	/* A TLS ClientHello, HTTP, and near misses of both signatures. */
	static const uint8_t hello[] = { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc };
	static const uint8_t near_v2[] = { '\r', '\n', '\r', '\n', '\0', '\r', '\n', 'Q', 'U', 'I', 'X', '\n' };
	size_t size = 99;

	ck_assert_int_eq(proxy_header_size(hello, sizeof(hello), &size), KR_E_PROXY_MISSING);
	ck_assert_int_eq(proxy_header_size(hello, 1, &size), KR_E_PROXY_MISSING);
	ck_assert_int_eq(proxy_header_size(LIT("GET / HTTP/1.1\r\n"), &size), KR_E_PROXY_MISSING);
	ck_assert_int_eq(proxy_header_size(LIT("PROXZ TCP4"), &size), KR_E_PROXY_MISSING);
	ck_assert_int_eq(proxy_header_size(near_v2, sizeof(near_v2), &size), KR_E_PROXY_MISSING);
	/* A prefix of either signature is not yet known to be anything else. */
	ck_assert_int_eq(proxy_header_size(LIT("PROX"), &size), KR_E_PROXY_TRUNCATED);
	ck_assert_int_eq(proxy_header_size(near_v2, 10, &size), KR_E_PROXY_TRUNCATED);
	ck_assert_int_eq(proxy_header_size(hello, 0, &size), KR_E_PROXY_TRUNCATED);
	ck_assert_uint_eq(size, 99);
}
END_TEST

START_TEST(test_v2_tcp4)
{
	uint8_t buf[64];
	size_t len = v2(buf, 0x21, 0x11, tcp4_block, sizeof(tcp4_block));
	struct proxy_header h;

	assert_size(buf, len);
	ck_assert_int_eq(proxy_parse(buf, len, &h), 0);
	ck_assert_uint_eq(h.version, 2);
	assert_ipv4(&h, "192.0.2.10", 56324);
}
END_TEST

START_TEST(test_v2_tcp6)
{
	uint8_t block[36] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1, [16] = 0x20, 0x01, 0x0d, 0xb8, [31] = 2,
			      [32] = 0x9c, 0x40, 0x16, 0x40 };
	uint8_t buf[64];
	size_t len = v2(buf, 0x21, 0x21, block, sizeof(block));
	struct proxy_header h;

	assert_size(buf, len);
	ck_assert_int_eq(proxy_parse(buf, len, &h), 0);
	assert_ipv6(&h, "2001:db8::1", 40000);
}
END_TEST

START_TEST(test_v2_tlvs_skipped)
{
	/* An ALPN TLV and HAProxy's NOOP padding after the addresses. */
	uint8_t block[12 + 7 + 5], buf[64];
	struct proxy_header h;
	size_t len;

	memcpy(block, tcp4_block, 12);
	memcpy(block + 12, "\x01\x00\x04kmip\x04\x00\x02\x00\x00", 12);
	len = v2(buf, 0x21, 0x11, block, sizeof(block));
	ck_assert_uint_eq(len, 16 + 24);
	assert_size(buf, len);
	ck_assert_int_eq(proxy_parse(buf, len, &h), 0);
	assert_ipv4(&h, "192.0.2.10", 56324);
	/* The declared length bounds them, however they look. */
	memset(block + 12, 0xff, 12);
	len = v2(buf, 0x21, 0x11, block, sizeof(block));
	ck_assert_int_eq(proxy_parse(buf, len, &h), 0);
	ck_assert_int_eq(proxy_parse(buf, len - 1, &h), KR_E_PROXY_TRUNCATED);
}
END_TEST

START_TEST(test_v2_local)
{
	uint8_t buf[64];
	struct proxy_header h = { .has_source = true };
	size_t len = v2(buf, 0x20, 0x00, NULL, 0);

	assert_size(buf, len);
	ck_assert_int_eq(proxy_parse(buf, len, &h), 0);
	ck_assert_uint_eq(h.version, 2);
	ck_assert(!h.has_source);
	/* LOCAL with an address block: the block means nothing. */
	len = v2(buf, 0x20, 0x11, tcp4_block, sizeof(tcp4_block));
	h.has_source = true;
	ck_assert_int_eq(proxy_parse(buf, len, &h), 0);
	ck_assert(!h.has_source);
	/* ...whatever its family says */
	len = v2(buf, 0x20, 0x31, tcp4_block, 3);
	ck_assert_int_eq(proxy_parse(buf, len, &h), 0);
}
END_TEST

START_TEST(test_v2_malformed)
{
	static const struct {
		uint8_t ver_cmd, family;
		size_t len;
		int error;
	} bad[] = {
		{ 0x11, 0x11, 12, KR_E_PROXY_V2_COMMAND }, /* version 1 */
		{ 0x31, 0x11, 12, KR_E_PROXY_V2_COMMAND }, /* version 3 */
		{ 0x22, 0x11, 12, KR_E_PROXY_V2_COMMAND }, /* command 2 */
		{ 0x2F, 0x11, 12, KR_E_PROXY_V2_COMMAND },
		{ 0x21, 0x00, 12, KR_E_PROXY_FAMILY },     /* UNSPEC with PROXY */
		{ 0x21, 0x12, 12, KR_E_PROXY_FAMILY },     /* UDP */
		{ 0x21, 0x22, 36, KR_E_PROXY_FAMILY },
		{ 0x21, 0x31, 12, KR_E_PROXY_FAMILY },     /* UNIX */
		{ 0x21, 0x10, 12, KR_E_PROXY_FAMILY },
		{ 0x21, 0x11, 11, KR_E_PROXY_V2_LENGTH },
		{ 0x21, 0x11, 0, KR_E_PROXY_V2_LENGTH },
		{ 0x21, 0x21, 35, KR_E_PROXY_V2_LENGTH },
		{ 0x21, 0x21, 12, KR_E_PROXY_V2_LENGTH },
	};
	uint8_t block[36] = { 0 }, buf[64];
	struct proxy_header h = { .version = 77 };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t len = v2(buf, bad[i].ver_cmd, bad[i].family, block, bad[i].len);

		ck_assert_msg(proxy_parse(buf, len, &h) == bad[i].error, "case %zu", i);
		ck_assert_uint_eq(h.version, 77);
	}
}
END_TEST

START_TEST(test_v2_longest)
{
	size_t len = 16 + 65535, size = 0;
	uint8_t *buf = calloc(1, len);
	struct proxy_header h;

	ck_assert_ptr_nonnull(buf);
	v2(buf, 0x21, 0x11, tcp4_block, sizeof(tcp4_block));
	buf[14] = buf[15] = 0xff;
	ck_assert_int_eq(proxy_header_size(buf, 16, &size), 0);
	ck_assert_uint_eq(size, len);
	ck_assert_int_eq(proxy_parse(buf, len - 1, &h), KR_E_PROXY_TRUNCATED);
	ck_assert_int_eq(proxy_parse(buf, len, &h), 0);
	assert_ipv4(&h, "192.0.2.10", 56324);
	free(buf);
}
END_TEST

static struct sockaddr_storage address(const char *text, unsigned port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

	if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
	} else {
		ck_assert_int_eq(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
	}
	return ss;
}

static bool trusted(const struct cfg_net *nets, size_t n, const char *text)
{
	struct sockaddr_storage ss = address(text, 1234);

	return proxy_trusted(nets, n, (const struct sockaddr *)&ss);
}

START_TEST(test_trusted)
{
	static const struct cfg_net nets[] = {
		{ AF_INET, { 10, 0, 0, 0 }, 8 },
		{ AF_INET, { 172, 16, 0, 0 }, 12 },
		{ AF_INET, { 127, 0, 0, 9 }, 32 },
		{ AF_INET6, { 0x20, 0x01, 0x0d, 0xb8, 0, 1 }, 48 },
		{ AF_INET6, { [15] = 1 }, 128 },
	};
	static const struct cfg_net everything_v4[] = { { AF_INET, { 0 }, 0 } };
	const size_t n = sizeof(nets) / sizeof(nets[0]);
	struct sockaddr_storage unix_peer = { .ss_family = AF_UNIX }, unknown = { .ss_family = AF_UNSPEC };

	ck_assert(trusted(nets, n, "10.0.0.0"));
	ck_assert(trusted(nets, n, "10.255.255.255"));
	ck_assert(!trusted(nets, n, "11.0.0.0"));
	ck_assert(!trusted(nets, n, "9.255.255.255"));
	ck_assert(trusted(nets, n, "172.31.255.255"));
	ck_assert(!trusted(nets, n, "172.32.0.0"));
	ck_assert(!trusted(nets, n, "172.15.255.255"));
	ck_assert(trusted(nets, n, "127.0.0.9"));
	ck_assert(!trusted(nets, n, "127.0.0.1"));
	ck_assert(!trusted(nets, n, "127.0.0.8"));
	ck_assert(trusted(nets, n, "2001:db8:1:ffff::7"));
	ck_assert(!trusted(nets, n, "2001:db8:2::7"));
	ck_assert(trusted(nets, n, "::1"));
	ck_assert(!trusted(nets, n, "::2"));
	/* An IPv4 peer seen through an IPv6 socket is its IPv4 address. */
	ck_assert(trusted(nets, n, "::ffff:10.1.2.3"));
	ck_assert(trusted(nets, n, "::ffff:127.0.0.9"));
	ck_assert(!trusted(nets, n, "::ffff:127.0.0.1"));
	/* Families never mix: 0.0.0.0/0 is every IPv4 address, no IPv6 one. */
	ck_assert(trusted(everything_v4, 1, "203.0.113.7"));
	ck_assert(!trusted(everything_v4, 1, "2001:db8::1"));
	ck_assert(!trusted(nets, 0, "10.0.0.1"));
	ck_assert(!proxy_trusted(nets, n, (const struct sockaddr *)&unix_peer));
	ck_assert(!proxy_trusted(nets, n, (const struct sockaddr *)&unknown));
}
END_TEST

/* The reader, on a socket pair: the peer's address is given, as getpeername
 * would give it for TCP. */

static const struct cfg_net balancer[] = { { AF_INET, { 127, 0, 0, 9 }, 32 } };

static uint64_t in_ms(unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u + ms * 1000u;
}

/* Sends data on one end, optionally closes it, and runs proxy_accept on the
 * other as if from peer; then reads what is left: the bytes after the header. */
static int accept_from(const char *peer, const uint8_t *data, size_t len, bool close_after, unsigned wait_ms,
		       struct proxy_header *ret, uint8_t *rest, size_t *rest_len)
{
	struct sockaddr_storage ss = address(peer, 40000);
	int sv[2], r;
	ssize_t n;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ck_assert_int_eq(write(sv[0], data, len), (ssize_t)len);
	if (close_after)
		close(sv[0]);
	r = proxy_accept(sv[1], (const struct sockaddr *)&ss, balancer, 1, in_ms(wait_ms), ret);
	if (!close_after)
		close(sv[0]);
	n = read(sv[1], rest, *rest_len);
	ck_assert_int_ge(n, 0);
	*rest_len = (size_t)n;
	close(sv[1]);
	return r;
}

START_TEST(test_reads_no_byte_past_the_header)
{
	static const char hello[] = "\x16\x03\x01\x02\x00\x01";
	uint8_t data[128], rest[128], block[12 + 9];
	const char *const v1[] = { "PROXY UNKNOWN\r\n", "PROXY TCP4 192.0.2.10 198.51.100.1 56324 5696\r\n" };
	struct proxy_header h;
	size_t len, rest_len;

	for (size_t i = 0; i < 2; i++) {
		len = strlen(v1[i]);
		memcpy(data, v1[i], len);
		memcpy(data + len, hello, sizeof(hello) - 1);
		rest_len = sizeof(rest);
		ck_assert_int_eq(accept_from("127.0.0.9", data, len + sizeof(hello) - 1, true, 5000, &h, rest, &rest_len),
				 0);
		ck_assert_uint_eq(h.version, 1);
		ck_assert_uint_eq(rest_len, sizeof(hello) - 1);
		ck_assert_mem_eq(rest, hello, rest_len);
	}
	memcpy(block, tcp4_block, 12);
	memcpy(block + 12, "\x03\x00\x04\x01\x02\x03\x04\x16\x03", 9);
	len = v2(data, 0x21, 0x11, block, sizeof(block));
	memcpy(data + len, hello, sizeof(hello) - 1);
	rest_len = sizeof(rest);
	ck_assert_int_eq(accept_from("127.0.0.9", data, len + sizeof(hello) - 1, true, 5000, &h, rest, &rest_len), 0);
	assert_ipv4(&h, "192.0.2.10", 56324);
	ck_assert_uint_eq(rest_len, sizeof(hello) - 1);
	ck_assert_mem_eq(rest, hello, rest_len);
}
END_TEST

START_TEST(test_trusted_peer_must_send_one)
{
	static const char hello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00\x00\x00\x00";
	uint8_t rest[64], header[64];
	struct proxy_header h = { .version = 77 };
	size_t rest_len = sizeof(rest);

	ck_assert_int_eq(accept_from("127.0.0.9", LIT(hello), true, 5000, &h, rest, &rest_len), KR_E_PROXY_MISSING);
	ck_assert_uint_eq(h.version, 77);
	rest_len = sizeof(rest);
	ck_assert_int_eq(accept_from("::ffff:127.0.0.9", LIT(hello), true, 5000, &h, rest, &rest_len),
			 KR_E_PROXY_MISSING);
	rest_len = sizeof(rest);
	ck_assert_int_eq(accept_from("127.0.0.9", LIT(""), true, 5000, &h, rest, &rest_len), KR_E_PROXY_CLOSED);
	rest_len = sizeof(rest);
	ck_assert_int_eq(accept_from("127.0.0.9", LIT("PROXY TCP4 192.0.2.10 "), true, 5000, &h, rest, &rest_len),
			 KR_E_PROXY_TRUNCATED);
	rest_len = sizeof(rest);
	v2(header, 0x21, 0x11, tcp4_block, sizeof(tcp4_block));
	ck_assert_int_eq(accept_from("127.0.0.9", header, 14, true, 5000, &h, rest, &rest_len), KR_E_PROXY_TRUNCATED);
	rest_len = sizeof(rest);
	ck_assert_int_eq(accept_from("127.0.0.9", header, 20, true, 5000, &h, rest, &rest_len), KR_E_PROXY_TRUNCATED);
	/* A header that stops coming: refused at the deadline. */
	rest_len = sizeof(rest);
	ck_assert_int_eq(accept_from("127.0.0.9", LIT("PROXY TCP4 192.0.2.10 "), false, 200, &h, rest, &rest_len),
			 KR_E_PROXY_TIMEOUT);
	ck_assert_uint_eq(h.version, 77);
}
END_TEST

START_TEST(test_untrusted_peer_must_not)
{
	static const char hello[] = "\x16\x03\x01\x02\x00\x01";
	const char *const headers[] = { "PROXY TCP4 192.0.2.10 198.51.100.1 56324 5696\r\n", "PROXY UNKNOWN\r\n", "P",
					"PROXY garbage" };
	uint8_t data[64], rest[64];
	struct proxy_header h = { .version = 77 };
	size_t len, rest_len;

	for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
		rest_len = sizeof(rest);
		ck_assert_int_eq(accept_from("127.0.0.1", (const uint8_t *)headers[i], strlen(headers[i]), true, 5000, &h,
					     rest, &rest_len),
				 KR_E_PROXY_UNTRUSTED);
		ck_assert_uint_eq(h.version, 77);
		/* Refused without a byte taken. */
		ck_assert_uint_eq(rest_len, strlen(headers[i]));
	}
	len = v2(data, 0x20, 0x00, NULL, 0);
	rest_len = sizeof(rest);
	ck_assert_int_eq(accept_from("10.0.0.1", data, len, true, 5000, &h, rest, &rest_len), KR_E_PROXY_UNTRUSTED);
	ck_assert_uint_eq(rest_len, len);
	/* TLS from an untrusted peer: nothing taken, nothing said about the client. */
	rest_len = sizeof(rest);
	h.has_source = true;
	ck_assert_int_eq(accept_from("127.0.0.1", LIT(hello), true, 5000, &h, rest, &rest_len), 0);
	ck_assert(!h.has_source);
	ck_assert_uint_eq(h.version, 0);
	ck_assert_uint_eq(rest_len, sizeof(hello) - 1);
	ck_assert_mem_eq(rest, hello, rest_len);
	/* Nothing at all by the deadline: left to the handshake's own timeout. */
	rest_len = sizeof(rest);
	ck_assert_int_eq(accept_from("127.0.0.1", LIT(""), false, 100, &h, rest, &rest_len), 0);
}
END_TEST

START_TEST(test_no_trusted_balancer_no_look)
{
	/* Without proxy_protocol.trusted the relay is as it was: no byte is looked
	 * at or waited for, so a header is left to fail the TLS handshake. */
	struct sockaddr_storage peer = address("127.0.0.1", 40000);
	static const char line[] = "PROXY TCP4 192.0.2.10 198.51.100.1 56324 5696\r\n";
	struct proxy_header h = { .version = 77, .has_source = true };
	uint8_t rest[64];
	int sv[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ck_assert_int_eq(proxy_accept(sv[1], (const struct sockaddr *)&peer, NULL, 0, in_ms(60000), &h), 0);
	ck_assert(!h.has_source);
	ck_assert_uint_eq(h.version, 0);
	ck_assert_int_eq(write(sv[0], line, sizeof(line) - 1), (ssize_t)sizeof(line) - 1);
	ck_assert_int_eq(proxy_accept(sv[1], (const struct sockaddr *)&peer, NULL, 0, in_ms(60000), &h), 0);
	close(sv[0]);
	ck_assert_int_eq(read(sv[1], rest, sizeof(rest)), (ssize_t)sizeof(line) - 1);
	close(sv[1]);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("proxy");
	TCase *parse = tcase_create("parse"), *trust = tcase_create("trusted"), *io = tcase_create("read");
	SRunner *sr;
	int failed;

	tcase_add_test(parse, test_v1_tcp4);
	tcase_add_test(parse, test_v1_tcp6);
	tcase_add_test(parse, test_v1_unknown);
	tcase_add_test(parse, test_v1_malformed);
	tcase_add_test(parse, test_v1_embedded_nul);
	tcase_add_test(parse, test_not_a_header);
	tcase_add_test(parse, test_v2_tcp4);
	tcase_add_test(parse, test_v2_tcp6);
	tcase_add_test(parse, test_v2_tlvs_skipped);
	tcase_add_test(parse, test_v2_local);
	tcase_add_test(parse, test_v2_malformed);
	tcase_add_test(parse, test_v2_longest);
	tcase_add_test(trust, test_trusted);
	tcase_add_test(io, test_reads_no_byte_past_the_header);
	tcase_add_test(io, test_trusted_peer_must_send_one);
	tcase_add_test(io, test_untrusted_peer_must_not);
	tcase_add_test(io, test_no_trusted_balancer_no_look);
	suite_add_tcase(s, parse);
	suite_add_tcase(s, trust);
	suite_add_tcase(s, io);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
