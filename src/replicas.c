/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "replicas.h"

#include <stdlib.h>
#include <string.h>

#include "store.h"

int replicas_list(struct p11_token *tok, int i, FILE *out)
{
	struct store st = { .tok = tok, .backend = i };
	struct store_obj *objs = NULL;
	size_t n = 0;
	int r = store_managed(&st, &objs, &n);

	for (size_t k = 0; r == 0 && k < n; k++)
		fprintf(out, "uid: %s\n", objs[k].uid);
	free(objs);
	return r;
}

static int by_uid(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool holds(const struct replica_list *l, const char *uid)
{
	return l->listed && l->n && bsearch(&uid, l->uids, l->n, sizeof(*l->uids), by_uid) != NULL;
}

size_t replicas_compare(const struct cfg *c, struct replica_list *l, FILE *out)
{
	const struct cfg_backend *b = c->pkcs11.backends;
	size_t n = c->pkcs11.n_backends, warnings = 0;

	for (size_t i = 0; i < n; i++)
		if (l[i].listed && l[i].n)
			qsort(l[i].uids, l[i].n, sizeof(*l[i].uids), by_uid);
	/* Each object a backend lacks, named once, with the first backend that holds it. */
	for (size_t j = 0; j < n; j++) {
		size_t lacking = 0;

		for (size_t i = 0; l[j].listed && i < n; i++) {
			for (size_t k = 0; l[i].listed && i != j && k < l[i].n; k++) {
				const char *uid = l[i].uids[k];
				bool earlier = false;

				for (size_t e = 0; e < i && !earlier; e++)
					earlier = e != j && holds(&l[e], uid);
				if (earlier || holds(&l[j], uid))
					continue;
				if (lacking++ < REPLICAS_MAX_LINES)
					fprintf(out, "warning: pkcs11.backends[%zu] (%s): lacks %s, which backend %s holds\n",
						j, b[j].name, uid, b[i].name);
			}
		}
		if (lacking > REPLICAS_MAX_LINES)
			fprintf(out, "warning: pkcs11.backends[%zu] (%s): lacks %zu more relay-managed objects\n", j,
				b[j].name, lacking - REPLICAS_MAX_LINES);
		warnings += lacking;
	}
	return warnings;
}

void replica_list_clear(struct replica_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->uids[i]);
	free(l->uids);
	*l = (struct replica_list){ 0 };
}
