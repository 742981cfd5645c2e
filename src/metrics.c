/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The file's families, in the order they are written. Every sample of the file is
 * one of these with its labels; the histograms' samples are their buckets, sum
 * and count. */
enum family {
	F_REQUESTS,
	F_REQUEST_DURATION,
	F_CONNECTIONS,
	F_HANDSHAKE,
	F_PKCS11_ERRORS,
	F_BACKEND_UP,
	F_BACKEND_LAST_SUCCESS,
	F_BACKEND_LAST_FAILURE,
	N_FAMILIES
};

static const struct {
	const char *name, *type, *help;
} families[N_FAMILIES] = {
	[F_REQUESTS] = { "kmip_relay_requests_total", "counter",
			 "KMIP batch items served, by operation and result (a Result Reason, or Success)." },
	[F_REQUEST_DURATION] = { "kmip_relay_request_duration_seconds", "histogram",
				 "Time to serve one KMIP batch item, by operation." },
	[F_CONNECTIONS] = { "kmip_relay_connections_total", "counter",
			    "Connections, by how they ended: closed, tls_failed, authentication_failed, timeout, "
			    "error, or crash (the process ended inside a PKCS#11 call, found in the health file "
			    "afterwards)." },
	[F_HANDSHAKE] = { "kmip_relay_tls_handshake_seconds", "histogram", "Duration of the TLS handshakes." },
	[F_PKCS11_ERRORS] = { "kmip_relay_pkcs11_errors_total", "counter",
			      "PKCS#11 calls that returned a code other than CKR_OK, by its name." },
	[F_BACKEND_UP] = { "kmip_relay_backend_up", "gauge",
			   "1 if the pool's health file has the backend up, 0 while it is marked down." },
	[F_BACKEND_LAST_SUCCESS] = { "kmip_relay_backend_last_success_timestamp_seconds", "gauge",
				     "When a relay process or --probe last opened the backend, logged in and used it." },
	[F_BACKEND_LAST_FAILURE] = { "kmip_relay_backend_last_failure_timestamp_seconds", "gauge",
				     "When the backend last failed (a device-class error, a timeout or a crash)." },
};

/* The histograms' upper bounds, in seconds, as written in "le". */
static const struct {
	double le;
	const char *text;
} buckets[] = {
	{ 0.0001, "0.0001" }, { 0.00025, "0.00025" }, { 0.0005, "0.0005" }, { 0.001, "0.001" },
	{ 0.0025, "0.0025" }, { 0.005, "0.005" },     { 0.01, "0.01" },     { 0.025, "0.025" },
	{ 0.05, "0.05" },     { 0.1, "0.1" },         { 0.25, "0.25" },     { 0.5, "0.5" },
	{ 1, "1" },           { 2.5, "2.5" },         { 5, "5" },           { 10, "10" },
};
#define N_BUCKETS (sizeof(buckets) / sizeof(buckets[0]) + 1) /* and +Inf */

static const char *const end_names[] = {
	[METRICS_END_CLOSED] = "closed",
	[METRICS_END_TLS_FAILED] = "tls_failed",
	[METRICS_END_AUTH_FAILED] = "authentication_failed",
	[METRICS_END_TIMEOUT] = "timeout",
	[METRICS_END_ERROR] = "error",
};

/* One series: a family and its label values (operation and result, operation,
 * end, ckr or backend; histograms have no "le" here, their buckets are counts).
 * Label values are the relay's own names (operations, Result Reasons, CKR_
 * names, backend names): no quote or backslash to escape. */
#define LABEL_MAX (CFG_MAX_NAME + 1) /* a backend's name is the longest */
struct series {
	enum family f;
	char a[LABEL_MAX], b[LABEL_MAX];
	double value;              /* a counter or gauge; a histogram's sum */
	uint64_t count[N_BUCKETS]; /* a histogram's cumulative buckets, +Inf last */
};

/* A file of more series than this gains no new ones (operations, results and
 * codes are few: it never gets there). */
#define MAX_SERIES 2048
#define MAX_FILE (4 << 20)

/* Series sorted by family and labels up to sorted, unsorted after it (those
 * added since): a file's hundreds are found by bisection, a process's few new
 * ones by a scan. */
struct set {
	struct series *v;
	size_t n, max, sorted;
};

/* What this process counted. */
static bool counting;
static struct set mine;

static int by_labels(const void *x, const void *y)
{
	const struct series *a = x, *b = y;
	int r = (int)a->f - (int)b->f;

	if (!r)
		r = strcmp(a->a, b->a);
	return r ? r : strcmp(a->b, b->b);
}

static struct series *append(struct set *s, enum family f, const char *a, const char *b)
{
	struct series *x;

	if (s->n == MAX_SERIES || strlen(a) >= LABEL_MAX || strlen(b) >= LABEL_MAX)
		return NULL;
	if (s->n == s->max) {
		size_t max = s->max ? 2 * s->max : 32;
		struct series *v = realloc(s->v, max * sizeof(*v));

		if (!v)
			return NULL;
		s->v = v;
		s->max = max;
	}
	x = &s->v[s->n++];
	*x = (struct series){ .f = f };
	memcpy(x->a, a, strlen(a) + 1);
	memcpy(x->b, b, strlen(b) + 1);
	return x;
}

static struct series *find(struct set *s, enum family f, const char *a, const char *b, bool add)
{
	struct series key = { .f = f }, *x;

	if (strlen(a) >= LABEL_MAX || strlen(b) >= LABEL_MAX)
		return NULL;
	memcpy(key.a, a, strlen(a) + 1);
	memcpy(key.b, b, strlen(b) + 1);
	if (s->sorted && (x = bsearch(&key, s->v, s->sorted, sizeof(*s->v), by_labels)))
		return x;
	for (size_t i = s->sorted; i < s->n; i++)
		if (by_labels(&key, &s->v[i]) == 0)
			return &s->v[i];
	return add ? append(s, f, a, b) : NULL;
}

static void add(struct set *s, enum family f, const char *a, const char *b, double v)
{
	struct series *x = find(s, f, a, b, true);

	if (x)
		x->value += v;
}

static void observe(struct set *s, enum family f, const char *a, double seconds)
{
	struct series *x = find(s, f, a, "", true);

	if (!x)
		return;
	x->value += seconds;
	for (size_t i = 0; i < N_BUCKETS; i++)
		x->count[i] += i == N_BUCKETS - 1 || seconds <= buckets[i].le;
}

void metrics_start(const struct cfg *c)
{
	counting = c->metrics.file != NULL;
}

void metrics_request(const char *operation, const char *result, uint64_t latency_us)
{
	if (!counting)
		return;
	add(&mine, F_REQUESTS, operation, result, 1);
	observe(&mine, F_REQUEST_DURATION, operation, (double)latency_us / 1e6);
}

void metrics_handshake(uint64_t duration_us)
{
	if (counting)
		observe(&mine, F_HANDSHAKE, "", (double)duration_us / 1e6);
}

void metrics_ckr(const char *name)
{
	if (counting)
		add(&mine, F_PKCS11_ERRORS, name, "", 1);
}

/* Reading the file. */

static enum family family_of(const char *name, size_t len, int *ret_part)
{
	static const char *const parts[] = { "_bucket", "_sum", "_count" };

	*ret_part = -1;
	for (int f = 0; f < N_FAMILIES; f++) {
		size_t n = strlen(families[f].name);

		if (len < n || memcmp(name, families[f].name, n) != 0)
			continue;
		if (len == n && strcmp(families[f].type, "histogram") != 0)
			return (enum family)f;
		for (int p = 0; p < 3 && strcmp(families[f].type, "histogram") == 0; p++)
			if (len == n + strlen(parts[p]) && memcmp(name + n, parts[p], strlen(parts[p])) == 0) {
				*ret_part = p;
				return (enum family)f;
			}
	}
	return N_FAMILIES;
}

/* The value of label key in "{k="v",...}", copied to out; false if absent. */
static bool label(const char *labels, const char *key, char out[LABEL_MAX])
{
	size_t klen = strlen(key);

	for (const char *p = labels; (p = strstr(p, key)); p++) {
		const char *v, *end;

		if ((p != labels && p[-1] != ',' && p[-1] != '{') || strncmp(p + klen, "=\"", 2) != 0)
			continue;
		v = p + klen + 2;
		if (!(end = strchr(v, '"')) || (size_t)(end - v) >= LABEL_MAX)
			return false;
		memcpy(out, v, (size_t)(end - v));
		out[end - v] = '\0';
		return true;
	}
	return false;
}

/* The label names of a family's series (histograms: besides "le"). */
static void label_names(enum family f, const char **ret_a, const char **ret_b)
{
	static const char *const names[N_FAMILIES][2] = {
		[F_REQUESTS] = { "operation", "result" }, [F_REQUEST_DURATION] = { "operation", NULL },
		[F_CONNECTIONS] = { "end", NULL },        [F_HANDSHAKE] = { NULL, NULL },
		[F_PKCS11_ERRORS] = { "ckr", NULL },      [F_BACKEND_UP] = { "backend", NULL },
		[F_BACKEND_LAST_SUCCESS] = { "backend", NULL }, [F_BACKEND_LAST_FAILURE] = { "backend", NULL },
	};

	*ret_a = names[f][0];
	*ret_b = names[f][1];
}

/* One sample line into s; a line that does not parse is dropped (the file is the
 * relay's own, but may have been edited). */
static void parse_line(struct set *s, char *line)
{
	char *sp = strrchr(line, ' '), *brace, *end;
	char a[LABEL_MAX] = "", b[LABEL_MAX] = "", le[LABEL_MAX];
	const char *an, *bn;
	struct series *x;
	enum family f;
	double v;
	int part;

	if (line[0] == '#' || !sp || strchr(line, '\\'))
		return;
	*sp = '\0';
	v = strtod(sp + 1, &end);
	if (end == sp + 1 || *end)
		return;
	brace = strchr(line, '{');
	if ((f = family_of(line, brace ? (size_t)(brace - line) : strlen(line), &part)) == N_FAMILIES)
		return;
	label_names(f, &an, &bn);
	if ((an && (!brace || !label(brace, an, a))) || (bn && !label(brace, bn, b)))
		return;
	/* A histogram's lines follow each other: the last series, or a new one
	 * (sorted, and duplicates merged, once the file is read). */
	if (s->n && s->v[s->n - 1].f == f && strcmp(s->v[s->n - 1].a, a) == 0 && strcmp(s->v[s->n - 1].b, b) == 0)
		x = &s->v[s->n - 1];
	else if (!(x = append(s, f, a, b)))
		return;
	if (part < 0 || part == 1) { /* a counter, gauge or sum */
		x->value = v;
		return;
	}
	if (part == 2)
		return; /* a histogram's count is its +Inf bucket */
	if (!brace || !label(brace, "le", le))
		return;
	for (size_t i = 0; i < N_BUCKETS; i++)
		if (strcmp(le, i < N_BUCKETS - 1 ? buckets[i].text : "+Inf") == 0)
			x->count[i] = v < 0 ? 0 : (uint64_t)v;
}

static void parse(struct set *s, char *text)
{
	size_t kept = 0;

	for (char *line = text, *nl; *line; line = nl ? nl + 1 : line + strlen(line)) {
		if ((nl = strchr(line, '\n')))
			*nl = '\0';
		parse_line(s, line);
		if (!nl)
			break;
	}
	/* A series twice (the file was edited): the first stays. */
	if (s->n)
		qsort(s->v, s->n, sizeof(*s->v), by_labels);
	for (size_t i = 0; i < s->n; i++)
		if (!kept || by_labels(&s->v[kept - 1], &s->v[i]) != 0)
			s->v[kept++] = s->v[i];
	s->n = s->sorted = kept;
}

/* The file's text, or "" if it does not exist yet. */
static int read_file(const char *path, char **ret)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	struct stat st;
	char *text;
	ssize_t got = 0;

	if (fd < 0 && errno == ENOENT) {
		*ret = strdup("");
		return *ret ? 0 : KR_E_NOMEM;
	}
	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return KR_E_SYSTEM;
	}
	if (st.st_size > MAX_FILE || !(text = malloc((size_t)st.st_size + 1))) {
		close(fd);
		errno = st.st_size > MAX_FILE ? EFBIG : ENOMEM;
		return KR_E_SYSTEM;
	}
	for (size_t off = 0; off < (size_t)st.st_size; off += (size_t)got)
		if ((got = read(fd, text + off, (size_t)st.st_size - off)) <= 0) {
			st.st_size = (off_t)off;
			break;
		}
	close(fd);
	text[st.st_size] = '\0';
	*ret = text;
	return 0;
}

/* Writing it. */

struct out {
	char *buf;
	size_t len, size;
	bool failed;
};

__attribute__((format(printf, 2, 3)))
static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(o->buf + o->len, o->size - o->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->failed = true;
			return;
		}
		if ((size_t)n < o->size - o->len)
			break;
		char *more = realloc(o->buf, 2 * o->size + (size_t)n);

		if (!more) {
			o->failed = true;
			return;
		}
		o->buf = more;
		o->size = 2 * o->size + (size_t)n;
	}
	o->len += (size_t)n;
}

/* The series' labels as written: "{k="v",k="v"}", or with more "{k="v",", so
 * that "le" follows; "" (more: "{") without labels. */
static const char *labels(const struct series *x, bool more, char *out, size_t size)
{
	const char *an, *bn;

	label_names(x->f, &an, &bn);
	if (!an)
		snprintf(out, size, "%s", more ? "{" : "");
	else if (!bn)
		snprintf(out, size, "{%s=\"%s\"%s", an, x->a, more ? "," : "}");
	else
		snprintf(out, size, "{%s=\"%s\",%s=\"%s\"%s", an, x->a, bn, x->b, more ? "," : "}");
	return out;
}

/* One line per sample, each written with one formatting call: a busy relay's
 * file has hundreds. */
static void format(struct out *o, struct set *s)
{
	char with_le[2 * LABEL_MAX + 64], plain[2 * LABEL_MAX + 64];
	size_t i = 0;

	if (s->n)
		qsort(s->v, s->n, sizeof(*s->v), by_labels);
	for (int f = 0; f < N_FAMILIES; f++) {
		const char *name = families[f].name;

		put(o, "# HELP %s %s\n# TYPE %s %s\n", name, families[f].help, name, families[f].type);
		for (; i < s->n && s->v[i].f == (enum family)f; i++) {
			const struct series *x = &s->v[i];

			labels(x, false, plain, sizeof(plain));
			if (strcmp(families[f].type, "histogram") != 0) {
				put(o, "%s%s %.17g\n", name, plain, x->value);
				continue;
			}
			labels(x, true, with_le, sizeof(with_le));
			for (size_t k = 0; k < N_BUCKETS; k++)
				put(o, "%s_bucket%sle=\"%s\"} %llu\n", name, with_le,
				    k < N_BUCKETS - 1 ? buckets[k].text : "+Inf", (unsigned long long)x->count[k]);
			put(o, "%s_sum%s %.17g\n%s_count%s %llu\n", name, plain, x->value, name, plain,
			    (unsigned long long)x->count[N_BUCKETS - 1]);
		}
	}
}

/* An error that the process which met it could not live to merge: a signal's name,
 * or a call past its deadline. */
static bool died(const char *error)
{
	return strncmp(error, "SIG", 3) == 0 || strcmp(error, "timeout") == 0;
}

/* The pool's backends as the health file has them: up, and the times of their
 * last success and failure. A failure newer than the file knows, recorded by a
 * process that died inside a module call (a signal's name, or "timeout") and so
 * could not merge, is one connection that ended in a crash. */
static void merge_backends(const struct cfg *c, struct set *s, struct health *h)
{
	static const enum family gauges[] = { F_BACKEND_UP, F_BACKEND_LAST_SUCCESS, F_BACKEND_LAST_FAILURE };
	struct health_state st[CFG_MAX_BACKENDS];
	size_t kept = 0;
	double crashes = 0;

	health_states(h, st);
	for (size_t i = 0; i < c->pkcs11.n_backends; i++) {
		const char *name = c->pkcs11.backends[i].name;
		struct series *up, *ok, *failed;

		/* Made first: a series added later may move the others. */
		for (size_t k = 0; k < sizeof(gauges) / sizeof(gauges[0]); k++)
			find(s, gauges[k], name, "", true);
		up = find(s, F_BACKEND_UP, name, "", false);
		ok = find(s, F_BACKEND_LAST_SUCCESS, name, "", false);
		failed = find(s, F_BACKEND_LAST_FAILURE, name, "", false);
		if (!up || !ok || !failed)
			continue;
		/* The record as this process's success found it, then as the file has it. */
		if (died(st[i].cleared_error) && (double)st[i].cleared_time > failed->value)
			crashes++;
		if (died(st[i].error) && (double)st[i].error_time > failed->value && st[i].error_time != st[i].failed_here &&
		    st[i].error_time != st[i].cleared_time)
			crashes++;
		up->value = st[i].down_until == 0;
		if ((double)st[i].ok_here > ok->value)
			ok->value = (double)st[i].ok_here;
		for (size_t k = 0; k < 3; k++) {
			long long t = k == 0 ? st[i].error_time : k == 1 ? st[i].failed_here : st[i].cleared_time;

			if ((double)t > failed->value)
				failed->value = (double)t;
		}
	}
	if (crashes)
		add(s, F_CONNECTIONS, "crash", "", crashes);
	/* Gauges of backends no longer configured describe nothing. */
	for (size_t i = 0; i < s->n; i++) {
		bool configured = s->v[i].f < F_BACKEND_UP;

		for (size_t k = 0; !configured && k < c->pkcs11.n_backends; k++)
			configured = strcmp(s->v[i].a, c->pkcs11.backends[k].name) == 0;
		if (configured)
			s->v[kept++] = s->v[i];
	}
	s->n = kept;
	s->sorted = 0; /* format sorts */
}

/* Adds what this process counted to s. */
static void merge_mine(struct set *s, enum metrics_end end)
{
	for (size_t i = 0; i < mine.n; i++) {
		const struct series *m = &mine.v[i];
		struct series *x = find(s, m->f, m->a, m->b, true);

		if (!x)
			continue;
		x->value += m->value;
		for (size_t k = 0; k < N_BUCKETS; k++)
			x->count[k] += m->count[k];
	}
	if (end != METRICS_END_NONE)
		add(s, F_CONNECTIONS, end_names[end], "", 1);
}

/* path with suffix appended, in a new string. */
static char *beside(const char *path, const char *suffix)
{
	size_t size = strlen(path) + strlen(suffix) + 1;
	char *p = malloc(size);

	if (p)
		snprintf(p, size, "%s%s", path, suffix);
	return p;
}

/* The new text, written whole to <file>.tmp and renamed into place: a reader
 * never sees half of it. Readable by node_exporter's user, whatever the umask. */
static int replace(const char *path, const char *tmp, const struct out *o)
{
	int fd, r = 0;

	if (unlink(tmp) < 0 && errno != ENOENT)
		return KR_E_SYSTEM;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
	if (fd < 0)
		return KR_E_SYSTEM;
	for (size_t off = 0; r == 0 && off < o->len;) {
		ssize_t n = write(fd, o->buf + off, o->len - off);

		if (n < 0 && errno != EINTR)
			r = KR_E_SYSTEM;
		else if (n > 0)
			off += (size_t)n;
	}
	if (r == 0 && fchmod(fd, 0644) < 0)
		r = KR_E_SYSTEM;
	if (close(fd) < 0 && r == 0)
		r = KR_E_SYSTEM;
	if (r == 0 && rename(tmp, path) < 0)
		r = KR_E_SYSTEM;
	if (r < 0) {
		int err = errno;

		unlink(tmp);
		errno = err;
	}
	return r;
}

int metrics_write(const struct cfg *c, enum metrics_end end, struct health *h, const char **ret_why)
{
	static char why[4096 + 128];
	const char *path = c->metrics.file, *failed = NULL;
	char *lock_path = NULL, *tmp = NULL, *text = NULL;
	struct health *own = NULL;
	struct set s = { 0 };
	struct out o = { 0 };
	int lock = -1, r = 0;

	if (!counting)
		return 0;
	if (!(lock_path = beside(path, ".lock")) || !(tmp = beside(path, ".tmp")) || !(o.buf = malloc(o.size = 8192))) {
		r = KR_E_NOMEM;
		goto out;
	}
	/* Read-only: a lock file that another user made still locks. */
	lock = open(lock_path, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
	if (lock < 0) {
		failed = lock_path;
		r = KR_E_SYSTEM;
		goto out;
	}
	while (flock(lock, LOCK_EX) < 0)
		if (errno != EINTR) {
			failed = lock_path;
			r = KR_E_SYSTEM;
			goto out;
		}
	if ((r = read_file(path, &text)) < 0) {
		failed = path;
		goto out;
	}
	parse(&s, text);
	merge_mine(&s, end);
	if (c->pkcs11.n_backends && !h && (r = health_open(c, &own)) == 0)
		h = own;
	if (h)
		merge_backends(c, &s, h);
	r = 0;
	format(&o, &s);
	if (o.failed) {
		r = KR_E_NOMEM;
		goto out;
	}
	if ((r = replace(path, tmp, &o)) < 0)
		failed = tmp;
out:
	if (r < 0)
		*ret_why = failed ? (snprintf(why, sizeof(why), "metrics.file: cannot write %s: %s", failed,
					      strerror(errno)), why)
				  : "metrics.file: out of memory";
	if (lock >= 0)
		close(lock);
	health_close(own);
	free(s.v);
	free(o.buf);
	free(text);
	free(tmp);
	free(lock_path);
	return r;
}
