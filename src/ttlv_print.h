/* SPDX-License-Identifier: BSD-3-Clause */
/* TTLV pretty-printer: an indented tree, one item per line, for traces and tests. */
#ifndef KR_TTLV_PRINT_H
#define KR_TTLV_PRINT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ttlv.h"

struct ttlv_print_ops {
	/* Name of a tag, or NULL to print it in hex. */
	const char *(*tag_name)(uint32_t tag);
	/* Name of an enumeration value, or NULL to print it in hex. */
	const char *(*enum_name)(uint32_t tag, uint32_t value);
	/* True if the item's value (and for a structure, everything inside it) must
	 * be masked. */
	bool (*redact)(const struct ttlv_item *it);
};

/* Writes the tree under root to out; KR_E_IO if out reports an error. */
int ttlv_print(FILE *out, const struct ttlv_item *root, const struct ttlv_print_ops *ops) KR_WUR;

#endif
