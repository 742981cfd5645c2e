/* SPDX-License-Identifier: BSD-3-Clause */
/* The replica check of --check-config: which relay-managed objects one backend of
 * the pool holds and another lacks. HSM clusters replicate on their own and may
 * lag, so these are warnings, not errors. */
#pragma once

#include <stdio.h>

#include "cfg.h"

/* Writes a "warning: ..." line to out for each object a backend lacks (at most
 * REPLICAS_MAX_LINES per backend, then a count) and for each backend that cannot be
 * opened; returns the number of warnings. A pool of one is not checked. */
size_t replicas_check(const struct cfg *c, FILE *out);

#define REPLICAS_MAX_LINES 20
