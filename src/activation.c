/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "activation.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "sd.h"

int act_listen(const char *addr, int *ret_fd, const char **ret_why)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
	struct addrinfo *res = NULL;
	char host[256];
	const char *colon = strrchr(addr, ':');
	size_t hlen;
	int fd = -1, one = 1;

	if (!colon || colon == addr || !colon[1]) {
		*ret_why = "--listen needs HOST:PORT";
		return KR_E_CONFIG;
	}
	hlen = (size_t)(colon - addr);
	if (addr[0] == '[' && colon[-1] == ']') { /* [v6]:port */
		addr++;
		hlen -= 2;
	}
	if (hlen >= sizeof(host)) {
		*ret_why = "--listen: host name too long";
		return KR_E_CONFIG;
	}
	memcpy(host, addr, hlen);
	host[hlen] = '\0';
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || !res) {
		*ret_why = "--listen: cannot resolve HOST:PORT";
		return KR_E_CONFIG;
	}
	fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 1) < 0) {
		*ret_why = strerror(errno);
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return KR_E_SYSTEM;
	}
	freeaddrinfo(res);
	*ret_fd = fd;
	return 0;
}

void act_format_address(const struct sockaddr *sa, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(out, len, "%s:%u", host, (unsigned)ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(out, len, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
	} else if (sa->sa_family == AF_UNIX) {
		snprintf(out, len, "unix");
	} else {
		snprintf(out, len, "unknown");
	}
}

static void describe_peer(struct activation *a)
{
	socklen_t sl = sizeof(a->peer_addr);

	if (getpeername(a->fd, (struct sockaddr *)&a->peer_addr, &sl) < 0)
		a->peer_addr.ss_family = AF_UNSPEC;
	act_format_address((const struct sockaddr *)&a->peer_addr, a->peer, sizeof(a->peer));
}

/* Points fds 0..last at /dev/null, so that nothing a module writes to stdout or
 * stderr can reach the client's socket. */
static int null_std_fds(int last)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (null < 0)
		return KR_E_SYSTEM;
	for (int fd = 0; fd <= last; fd++)
		if (fd != null && dup2(null, fd) < 0) {
			close(null);
			return KR_E_SYSTEM;
		}
	if (null > last)
		close(null);
	return 0;
}

/* Whether fd is a stream socket: the inetd check, made without libsystemd, which
 * under inetd nothing else would load (sd.h). */
static bool is_stream_socket(int fd)
{
	int type;
	socklen_t len = sizeof(type);

	return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
}

int act_get_connection(const char *listen_addr, struct activation *ret, const char **ret_why)
{
	struct activation a = { .fd = -1 };
	int src = -1, r;

	if (listen_addr) {
		int lfd;

		r = act_listen(listen_addr, &lfd, ret_why);
		if (r < 0)
			return r;
		do
			src = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		while (src < 0 && errno == EINTR);
		close(lfd);
		if (src < 0) {
			*ret_why = strerror(errno);
			return KR_E_SYSTEM;
		}
		a.mode = ACT_LISTEN;
	} else if (getenv("LISTEN_FDS") && sd_lazy_listen_fds(1) >= 1 &&
		   sd_lazy_is_socket(SD_LISTEN_FDS_START, AF_UNSPEC, SOCK_STREAM, 0) > 0) {
		src = SD_LISTEN_FDS_START;
		a.mode = ACT_SYSTEMD;
	} else if (is_stream_socket(STDIN_FILENO)) {
		src = STDIN_FILENO;
		a.mode = ACT_INETD;
	} else {
		*ret_why = "no connection: start under systemd (Accept=yes) or inetd, or use --listen HOST:PORT";
		return KR_E_CONFIG;
	}
	/* Keep the connection above fd 2 before 0-2 go to /dev/null. */
	a.fd = src > STDERR_FILENO ? src : fcntl(src, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
	if (a.fd < 0 || fcntl(a.fd, F_SETFD, FD_CLOEXEC) < 0 ||
	    null_std_fds(a.mode == ACT_LISTEN ? STDOUT_FILENO : STDERR_FILENO) < 0) {
		*ret_why = strerror(errno);
		return KR_E_SYSTEM;
	}
	/* A response must not wait for the client's delayed ACK of what went before
	 * it (the TLS 1.3 session ticket): 34 ms a connection. A socket that is not
	 * TCP has no such option and nothing to set. */
	(void)setsockopt(a.fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	describe_peer(&a);
	*ret = a;
	return 0;
}
