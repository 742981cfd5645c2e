/* SPDX-License-Identifier: BSD-3-Clause */
/* Helpers shared by the unit tests. */
#ifndef KR_TESTUTIL_H
#define KR_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Reads a file of hex digits (whitespace ignored) into a new buffer; aborts the
 * test on failure. */
uint8_t *tu_read_hex(const char *path, size_t *ret_len);
/* Parses a hex string; aborts on a malformed one. */
uint8_t *tu_hex(const char *hex, size_t *ret_len);
/* Names of the *.hex files in dir, sorted; NULL-terminated. */
char **tu_list_vectors(const char *dir, size_t *ret_n);
void tu_free_list(char **list);
/* dir/name in a new buffer. */
char *tu_path(const char *dir, const char *name);
/* The vectors directory: $VECTORS_DIR or test/vectors. */
const char *tu_vectors_dir(void);

#endif
