/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "replicas.h"

#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "token.h"

struct listing {
	struct p11_token *tok;
	struct store_obj *objs; /* sorted by UID */
	size_t n;
};

static int by_uid(const void *a, const void *b)
{
	return strcmp(((const struct store_obj *)a)->uid, ((const struct store_obj *)b)->uid);
}

static bool holds(const struct listing *l, const struct store_obj *o)
{
	return bsearch(o, l->objs, l->n, sizeof(*o), by_uid) != NULL;
}

/* Backend i's relay-managed objects, or why they cannot be listed. */
static const char *list_backend(const struct cfg *c, int i, struct listing *ret)
{
	struct conn_token ct;
	struct store st;

	token_init(&ct, c);
	if (token_check_open(&ct, i, &ret->tok) < 0)
		return ct.why ? ct.why : "cannot open the token";
	st = (struct store){ .tok = ret->tok, .backend = i };
	if (store_managed(&st, &ret->objs, &ret->n) < 0)
		return "cannot list its objects";
	qsort(ret->objs, ret->n, sizeof(*ret->objs), by_uid);
	return NULL;
}

size_t replicas_check(const struct cfg *c, FILE *out)
{
	const struct cfg_backend *b = c->pkcs11.backends;
	struct listing l[CFG_MAX_BACKENDS] = { 0 };
	bool listed[CFG_MAX_BACKENDS] = { false };
	size_t n = c->pkcs11.n_backends, warnings = 0;

	if (n < 2)
		return 0;
	for (size_t i = 0; i < n; i++) {
		const char *why = list_backend(c, (int)i, &l[i]);

		listed[i] = !why;
		if (why) {
			fprintf(out, "warning: pkcs11.backends[%zu] (%s): not compared with the others: %s\n", i,
				b[i].name, why);
			warnings++;
		}
	}
	/* Each object a backend lacks, named once, with the first backend that holds it. */
	for (size_t j = 0; j < n; j++) {
		size_t lacking = 0;

		for (size_t i = 0; listed[j] && i < n; i++) {
			for (size_t k = 0; listed[i] && i != j && k < l[i].n; k++) {
				const struct store_obj *o = &l[i].objs[k];
				bool earlier = false;

				for (size_t e = 0; e < i && !earlier; e++)
					earlier = e != j && listed[e] && holds(&l[e], o);
				if (earlier || holds(&l[j], o))
					continue;
				if (lacking++ < REPLICAS_MAX_LINES)
					fprintf(out, "warning: pkcs11.backends[%zu] (%s): lacks %s, which backend %s holds\n",
						j, b[j].name, o->uid, b[i].name);
			}
		}
		if (lacking > REPLICAS_MAX_LINES)
			fprintf(out, "warning: pkcs11.backends[%zu] (%s): lacks %zu more relay-managed objects\n", j,
				b[j].name, lacking - REPLICAS_MAX_LINES);
		warnings += lacking;
	}
	for (size_t i = 0; i < n; i++) {
		free(l[i].objs);
		p11_close(l[i].tok);
	}
	return warnings;
}
