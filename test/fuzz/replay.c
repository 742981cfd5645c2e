/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

/* Replays a fuzzer's saved corpus through its harness, without libFuzzer, so that
 * make check runs it with any compiler and sanitizer. */

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef CORPUS
#error "CORPUS must name the corpus directory"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + 1 + strlen(name) + 1;
	char *path = malloc(n);

	if (path)
		snprintf(path, n, "%s/%s", dir, name);
	return path;
}

/* Reads the whole file into a buffer of exactly its size, so that the sanitizers see
 * any read past the input. */
static int read_file(const char *path, uint8_t **ret_buf, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	uint8_t *buf = NULL;
	size_t len;
	int r = -1;

	if (!f)
		return -1;
	if (fstat(fileno(f), &st) < 0 || st.st_size < 0)
		goto out;
	len = (size_t)st.st_size;
	buf = malloc(len ? len : 1);
	if (!buf || fread(buf, 1, len, f) != len)
		goto out;
	*ret_buf = buf;
	*ret_len = len;
	buf = NULL;
	r = 0;
out:
	free(buf);
	fclose(f);
	return r;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
	const char *base = getenv("CORPUS_DIR");
	char *dir, **names = NULL;
	size_t n = 0, cap = 0, replayed = 0;
	struct dirent *e;
	bool oom = false;
	DIR *d;
	int status = 1;

	dir = join(base && *base ? base : "test/fuzz/corpus", CORPUS);
	if (!dir)
		goto out;
	d = opendir(dir);
	if (!d) {
		perror(dir);
		goto out;
	}
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			char **more = realloc(names, (cap ? cap * 2 : 64) * sizeof(*names));

			if (!more) {
				oom = true;
				break;
			}
			names = more;
			cap = cap ? cap * 2 : 64;
		}
		names[n] = strdup(e->d_name);
		if (!names[n]) {
			oom = true;
			break;
		}
		n++;
	}
	closedir(d);
	if (oom) {
		fprintf(stderr, "%s: out of memory\n", dir);
		goto out;
	}
	if (n > 1)
		qsort(names, n, sizeof(*names), cmp_names);

	for (size_t i = 0; i < n; i++) {
		char *path = join(dir, names[i]);
		struct stat st;
		uint8_t *buf = NULL;
		size_t len = 0;

		if (!path || stat(path, &st) < 0) {
			perror(path ? path : names[i]);
			free(path);
			goto out;
		}
		if (!S_ISREG(st.st_mode)) {
			free(path);
			continue;
		}
		if (read_file(path, &buf, &len) < 0) {
			perror(path);
			free(path);
			goto out;
		}
		LLVMFuzzerTestOneInput(buf, len);
		free(buf);
		free(path);
		replayed++;
	}
	printf("%s: replayed %zu inputs\n", dir, replayed);
	status = replayed > 0 ? 0 : 1;
	if (replayed == 0)
		fprintf(stderr, "%s: no inputs\n", dir);
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(dir);
	return status;
}
