/* SPDX-License-Identifier: BSD-3-Clause */
/* The replica check of --check-config --login: which relay-managed objects one
 * backend of the pool holds and another lacks. HSM clusters replicate on their
 * own and may lag, so these are warnings, not errors. Each backend is listed by
 * the check's process for it (a module that crashes harms only that one), and
 * the lists are compared here. */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include "cfg.h"
#include "p11.h"

/* One backend's relay-managed objects, by UID. */
struct replica_list {
	bool listed; /* false: the backend could not be listed, and is not compared */
	char **uids;
	size_t n;
};

/* Writes one line per relay-managed object (one with relay metadata) of backend i,
 * opened as tok, to out: "uid: UID". */
int replicas_list(struct p11_token *tok, int i, FILE *out) KR_WUR;
/* Writes a "warning: ..." line to out for each object a listed backend lacks that
 * another listed backend holds (at most REPLICAS_MAX_LINES per backend, then a
 * count); returns the number of objects lacking. Sorts the lists. */
size_t replicas_compare(const struct cfg *c, struct replica_list *l, FILE *out);
void replica_list_clear(struct replica_list *l);

#define REPLICAS_MAX_LINES 20
