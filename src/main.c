/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <gnutls/pkcs11.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>

#include "activation.h"
#include "cfg.h"
#include "clock.h"
#include "config_check.h"
#include "log.h"
#include "metrics.h"
#include "probe.h"
#include "token.h"
#include "p11_call.h"
#include "p11_tlskey.h"
#include "proxy.h"
#include "session.h"
#include "tls.h"

#ifndef DEFAULT_CONFIG
#define DEFAULT_CONFIG "/etc/kmip-relay/kmip-relay.json"
#endif

static void usage(FILE *out)
{
	fputs("Usage: kmip-relay [OPTION]...\n"
	      "Serve one KMIP connection on a PKCS#11 token. The connection comes from systemd\n"
	      "(Accept=yes socket), from inetd/xinetd (stdin), or from --listen.\n"
	      "\n"
	      "  -c, --config FILE      configuration file (default " DEFAULT_CONFIG ")\n"
	      "      --check-config     check the configuration, its files, certificates and tokens;\n"
	      "                         print OK or one line per problem\n"
	      "        --login          also log into each token and find the TLS key in it\n"
	      "        --strict         exit 3 on warnings\n"
	      "        --as USER        run the check as USER (the service's user; needs root)\n"
	      "      --probe            load, log in, sign and verify on each backend; one line each\n"
	      "        --json           one JSON object instead\n"
	      "  -l, --listen HOST:PORT accept one connection, serve it, exit; log to stderr\n"
	      "      --trace            log every request and response as a redacted TTLV tree\n"
	      "      --version          print the version\n"
	      "  -h, --help             print this help\n",
	      out);
}

/* Logs each line of a multi-line error text. */
static void log_errors(const char *errors)
{
	const char *p = errors;

	while (*p) {
		const char *nl = strchr(p, '\n');
		int len = nl ? (int)(nl - p) : (int)strlen(p);

		log_msg(LOG_ERR, "%.*s", len, p);
		p += len + (nl ? 1 : 0);
	}
}

/* The connection's summary; proxy is the balancer's address when its PROXY
 * header named the client (a->peer), else ""; ct is NULL before the token could
 * be used. Its phases are where a new connection's time goes: the handshake,
 * loading modules, the lock to C_Login done, and the first request. */
static void log_summary(const struct activation *a, const char *proxy, const struct tls_conn *t,
			const struct session_stats *st, const struct conn_token *ct, uint64_t t0)
{
	const char *backend = ct ? token_backend_name(ct, ct->current) : "-";
	const struct tls_identity *id = t ? tls_identity(t) : NULL;
	char message[2048], requests[16], duration[32], proxy_field[80] = "", phases[96];
	char identity[80] = "-", dn[512] = "-";
	const char *version = t ? tls_version_name(t) : "-", *cipher = t ? tls_cipher_name(t) : "-";

	if (id && id->has_certificate) {
		snprintf(identity, sizeof(identity), "sha256:%s", id->spki_sha256);
		log_escape(id->dn, strlen(id->dn), dn, sizeof(dn)); /* the client chose it */
	}
	snprintf(requests, sizeof(requests), "%u", st->requests);
	snprintf(duration, sizeof(duration), "%.1f", (double)(now_us() - t0) / 1e3);
	snprintf(phases, sizeof(phases), "handshake:%.1f,load:%.1f,login:%.1f,first:%.1f",
		 (double)st->handshake_us / 1e3, ct ? (double)ct->load_us / 1e3 : 0.0,
		 ct ? (double)ct->login_us / 1e3 : 0.0, (double)st->first_us / 1e3);
	if (proxy[0])
		snprintf(proxy_field, sizeof(proxy_field), " proxy=%s", proxy);
	snprintf(message, sizeof(message),
		 "connection peer=%s%s client=%s dn=\"%s\" tls=%s cipher=%s resumed=%s requests=%s backend=%s "
		 "phases_ms=%s duration_ms=%s end=\"%s\"",
		 a->peer, proxy_field, identity, dn, version, cipher, t && tls_resumed(t) ? "yes" : "no", requests,
		 backend, phases, duration, st->end);
	{
		const struct log_field fields[] = {
			{ "KMIP_PEER", a->peer },     { "KMIP_CLIENT", identity },   { "KMIP_CLIENT_DN", dn },
			{ "KMIP_TLS_VERSION", version }, { "KMIP_TLS_CIPHER", cipher }, { "KMIP_REQUESTS", requests },
			{ "KMIP_DURATION_MS", duration }, { "KMIP_END", st->end },   { "KMIP_PROXY", proxy },
			{ "KMIP_BACKEND", backend },  { "KMIP_PHASES_MS", phases },
		};

		log_record(LOG_INFO, message, fields, sizeof(fields) / sizeof(fields[0]));
	}
}

/* No core dump, by the kernel or through ptrace from the same user: a vendor
 * module that crashes is expected, and its core would hold the PIN, request data
 * and key material. */
static int no_core_dumps(void)
{
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 || setrlimit(RLIMIT_CORE, &(struct rlimit){ 0, 0 }) < 0)
		return KR_E_SYSTEM;
	return 0;
}

/* Takes the connection, opens the log and loads the config. Under inetd or systemd
 * fd 2 may be the socket, so there the connection is taken and 0-2 silenced before
 * anything is logged; with --listen the config is checked before waiting for a
 * client. */
static int start(const char *config, const char *listen_addr, struct activation *ret_a, struct cfg **ret_c)
{
	const char *why = NULL;
	char *errors = NULL;
	int r = 0;

	if (listen_addr)
		log_open(LOG_TARGET_STDERR);
	else if ((r = act_get_connection(NULL, ret_a, &why)) == 0)
		log_open(log_default_target(false));
	if (r < 0) {
		/* Nowhere safe to say why: stdin was not a socket, so fd 2 is not either. */
		log_open(LOG_TARGET_STDERR);
		log_msg(LOG_ERR, "%s", why);
		return r;
	}
	/* Before the config, the PIN and any request are in memory. */
	if ((r = no_core_dumps()) < 0) {
		log_msg(LOG_ERR, "cannot turn core dumps off: %s", strerror(errno));
		return r;
	}
	r = cfg_load(config, ret_c, &errors);
	if (r < 0) {
		log_errors(errors ? errors : "out of memory");
		free(errors);
		return r;
	}
	metrics_start(*ret_c);
	if ((*ret_c)->log.file && (r = log_open_file((*ret_c)->log.file)) < 0)
		goto fail;
	if ((r = p11_call_init((*ret_c)->pkcs11.call_timeout)) < 0) {
		log_msg(LOG_ERR, "cannot set up the deadline of PKCS#11 calls: %s", strerror(errno));
		goto fail;
	}
	if (listen_addr) {
		log_msg(LOG_INFO, "waiting for one connection on %s", listen_addr);
		if ((r = act_get_connection(listen_addr, ret_a, &why)) < 0) {
			log_msg(LOG_ERR, "%s", why);
			goto fail;
		}
	}
	return 0;
fail:
	cfg_free(*ret_c);
	*ret_c = NULL;
	return r;
}

/* How a connection ended (its summary's end=), as the metrics count it. */
static enum metrics_end end_kind(const char *end)
{
	static const struct {
		const char *end;
		enum metrics_end kind;
	} kinds[] = {
		{ "client closed the connection", METRICS_END_CLOSED },
		{ "TLS setup failed", METRICS_END_TLS_FAILED },
		{ "TLS handshake failed", METRICS_END_TLS_FAILED },
		{ "authentication failed", METRICS_END_AUTH_FAILED },
		{ "idle timeout", METRICS_END_TIMEOUT },
		{ "connection lifetime reached", METRICS_END_TIMEOUT },
	};

	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strcmp(end, kinds[i].end) == 0)
			return kinds[i].kind;
	return METRICS_END_ERROR;
}

/* Merged once the client is gone, so that it never waits for it. */
static void write_metrics(const struct cfg *c, const char *end, struct health *h)
{
	const char *why = NULL;

	if (metrics_write(c, end_kind(end), h, &why) < 0)
		log_msg(LOG_WARNING, "%s", why);
}

static bool key_in_token(const struct cfg *c)
{
	return strncmp(c->tls.key, "pkcs11:", 7) == 0;
}

/* The PROXY header, if the peer is a trusted balancer, read before anything
 * else: a refused one costs no TLS and no token work. From then on a->peer is
 * the client's address, and ret_proxy the balancer's (else ""). The header and
 * the TLS handshake share timeouts.handshake: *ret_handshake_ms is what the
 * header left of it. */
static int take_proxy_header(const struct cfg *c, struct activation *a, uint64_t t0,
			     char ret_proxy[64], unsigned *ret_handshake_ms)
{
	uint64_t budget = (uint64_t)c->timeouts.handshake * 1000000u, used;
	struct proxy_header h;
	int r = proxy_accept(a->fd, (const struct sockaddr *)&a->peer_addr, c->proxy_protocol.trusted,
			     c->proxy_protocol.n_trusted, t0 + budget, &h);

	if (r < 0) {
		/* The PROXY codes' texts name the header; a read that failed is said to be its. */
		bool named = r <= KR_E_PROXY_MISSING && r >= KR_E_PROXY_V2_LENGTH;

		log_msg(LOG_NOTICE, "connection from %s refused: %s%s", a->peer, named ? "" : "PROXY header not read: ",
			kr_strerror(r));
		return r;
	}
	ret_proxy[0] = '\0';
	if (h.has_source) {
		snprintf(ret_proxy, 64, "%s", a->peer);
		act_format_address((const struct sockaddr *)&h.source, a->peer, sizeof(a->peer));
	}
	used = now_us() - t0;
	/* at least 1 ms: a handshake timeout of 0 would mean none */
	*ret_handshake_ms = used + 1000 >= budget ? 1 : (unsigned)((budget - used) / 1000);
	return 0;
}

static int serve(const struct cfg *c, struct activation *a, bool trace)
{
	struct session_stats st = { .end = "TLS setup failed" };
	struct conn_token ct;
	gnutls_privkey_t privkey = NULL;
	CK_OBJECT_HANDLE key_handle;
	struct tls_conn *t = NULL;
	uint64_t t0 = now_us(), handshake_t0;
	const char *why = NULL;
	char proxy[64] = "";
	unsigned handshake_ms = 0;
	int r;

	r = take_proxy_header(c, a, t0, proxy, &handshake_ms);
	if (r < 0) {
		st.end = kr_strerror(r);
		log_summary(a, proxy, NULL, &st, NULL, t0);
		write_metrics(c, st.end, NULL);
		return r;
	}
	token_init(&ct, c);
	/* A TLS key in the token needs the module loaded before the handshake. */
	if (key_in_token(c)) {
		r = token_open_configured(&ct);
		why = ct.why;
		if (r == 0)
			r = p11_tls_privkey(ct.tls_tok, c->tls.key, &privkey, &key_handle, &why);
		if (r == 0)
			token_reserve(&ct, key_handle);
	}
	if (r == 0)
		r = tls_conn_new(c, privkey, a->fd, &t, &why);
	if (r < 0) {
		log_msg(LOG_ERR, "%s", why);
		log_summary(a, proxy, NULL, &st, &ct, t0);
		write_metrics(c, st.end, ct.health);
		token_close(&ct);
		return r;
	}
	handshake_t0 = now_us();
	r = tls_handshake(t, handshake_ms, &why);
	st.handshake_us = now_us() - handshake_t0;
	if (r < 0) {
		log_msg(LOG_NOTICE, "TLS handshake with %s failed: %s", a->peer, why);
		st.end = "TLS handshake failed";
		log_summary(a, proxy, NULL, &st, &ct, t0);
		tls_conn_free(t);
		write_metrics(c, st.end, ct.health);
		token_close(&ct);
		return r;
	}
	metrics_handshake(st.handshake_us);
	session_run(c, trace, a->peer, t, &ct, &st);
	tls_bye(t);
	log_summary(a, proxy, t, &st, &ct, t0);
	tls_conn_free(t);
	write_metrics(c, st.end, ct.health);
	token_close(&ct);
	return 0;
}

int main(int argc, char **argv)
{
	enum { OPT_CHECK = 256, OPT_TRACE, OPT_VERSION, OPT_LOGIN, OPT_STRICT, OPT_AS, OPT_PROBE, OPT_JSON };
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'c' },  { "check-config", no_argument, NULL, OPT_CHECK },
		{ "listen", required_argument, NULL, 'l' },  { "trace", no_argument, NULL, OPT_TRACE },
		{ "version", no_argument, NULL, OPT_VERSION }, { "help", no_argument, NULL, 'h' },
		{ "login", no_argument, NULL, OPT_LOGIN },   { "strict", no_argument, NULL, OPT_STRICT },
		{ "as", required_argument, NULL, OPT_AS },   { "probe", no_argument, NULL, OPT_PROBE },
		{ "json", no_argument, NULL, OPT_JSON },     { NULL, 0, NULL, 0 },
	};
	const char *config = DEFAULT_CONFIG, *listen_addr = NULL;
	struct check_options check_opts = { 0 };
	bool check = false, trace = false, probe = false, json = false;
	struct activation a;
	struct cfg *c = NULL;
	int opt, r;

	/* Before anything else, so that GnuTLS never loads p11-kit's registered
	 * modules: the relay loads its one module itself. */
	if (gnutls_pkcs11_init(GNUTLS_PKCS11_FLAG_MANUAL, NULL) < 0)
		return EXIT_FAILURE;
	while ((opt = getopt_long(argc, argv, "c:l:h", options, NULL)) != -1) {
		switch (opt) {
		case 'c': config = optarg; break;
		case 'l': listen_addr = optarg; break;
		case OPT_CHECK: check = true; break;
		case OPT_TRACE: trace = true; break;
		case OPT_LOGIN: check_opts.login = true; break;
		case OPT_STRICT: check_opts.strict = true; break;
		case OPT_AS: check_opts.as_user = optarg; break;
		case OPT_PROBE: probe = true; break;
		case OPT_JSON: json = true; break;
		case OPT_VERSION: puts(PACKAGE_NAME " " PACKAGE_VERSION); return EXIT_SUCCESS;
		case 'h': usage(stdout); return EXIT_SUCCESS;
		default: usage(stderr); return EXIT_FAILURE;
		}
	}
	/* The check's and the probe's options go with them only; the terminal
	 * commands exclude the serving ones. */
	if (optind < argc || (check && probe) || ((check || probe) && (listen_addr || trace)) ||
	    (!check && (check_opts.login || check_opts.strict || check_opts.as_user)) || (json && !probe)) {
		usage(stderr);
		return EXIT_FAILURE;
	}
	if (check)
		return config_check(config, &check_opts);
	if (probe)
		return probe_run(config, json);
	r = start(config, listen_addr, &a, &c);
	if (r < 0) {
		log_close();
		return EXIT_FAILURE;
	}
	r = serve(c, &a, trace || c->log.trace);
	cfg_free(c);
	log_close();
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
