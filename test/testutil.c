/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "testutil.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Noreturn void die(const char *what, const char *arg)
{
	fprintf(stderr, "testutil: %s: %s\n", what, arg);
	abort();
}

uint8_t *tu_hex(const char *hex, size_t *ret_len)
{
	size_t n = 0, cap = strlen(hex) / 2 + 1;
	uint8_t *out = malloc(cap);
	int hi = -1;

	if (!out)
		die("out of memory", hex);
	for (const char *p = hex; *p; p++) {
		int v;

		if (isspace((unsigned char)*p))
			continue;
		if (!isxdigit((unsigned char)*p))
			die("not hex", hex);
		v = isdigit((unsigned char)*p) ? *p - '0' : (tolower((unsigned char)*p) - 'a' + 10);
		if (hi < 0) {
			hi = v;
		} else {
			out[n++] = (uint8_t)(hi << 4 | v);
			hi = -1;
		}
	}
	if (hi >= 0)
		die("odd number of hex digits", hex);
	*ret_len = n;
	return out;
}

uint8_t *tu_read_hex(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "r");
	char *text;
	long size;
	uint8_t *out;

	if (!f)
		die("cannot open", path);
	if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
		die("cannot size", path);
	text = calloc(1, (size_t)size + 1);
	if (!text || fread(text, 1, (size_t)size, f) != (size_t)size)
		die("cannot read", path);
	fclose(f);
	out = tu_hex(text, ret_len);
	free(text);
	return out;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char **tu_list_vectors(const char *dir, size_t *ret_n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **list = NULL;
	size_t n = 0;

	if (!d)
		die("cannot open directory", dir);
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);

		if (len < 5 || strcmp(e->d_name + len - 4, ".hex") != 0)
			continue;
		list = realloc(list, (n + 2) * sizeof(*list));
		if (!list || !(list[n] = strdup(e->d_name)))
			die("out of memory", dir);
		n++;
	}
	closedir(d);
	if (n == 0)
		die("no vectors in", dir);
	qsort(list, n, sizeof(*list), cmp_str);
	list[n] = NULL;
	*ret_n = n;
	return list;
}

void tu_free_list(char **list)
{
	for (char **p = list; p && *p; p++)
		free(*p);
	free(list);
}

char *tu_path(const char *dir, const char *name)
{
	size_t len = strlen(dir) + strlen(name) + 2;
	char *p = malloc(len);

	if (!p)
		die("out of memory", name);
	snprintf(p, len, "%s/%s", dir, name);
	return p;
}

const char *tu_vectors_dir(void)
{
	const char *d = getenv("VECTORS_DIR");

	return d ? d : "test/vectors";
}
