/* SPDX-License-Identifier: BSD-3-Clause */
/* A PKCS#11 module for test/system/test_system.py that reports what the process
 * that loaded it may do, then passes every call to SoftHSM2: it stands for a
 * vendor module that tries to write where the sandbox of kmip-relay@.service
 * forbids it.
 *
 * When C_GetFunctionList is called it appends to $SANDBOX_PROBE_REPORT:
 *   "ids uid=U gid=G groups=G1,G2,..."
 *   "write PATH ok" or "write PATH ERRNO-NAME", for each path in $SANDBOX_PROBE
 *     (comma-separated): an attempt to create the file (removed again if it
 *     was created)
 *   "socket inet ok" or "socket inet ERRNO-NAME": an AF_INET socket
 *
 * It is built without sanitizers, so that it loads into any program.
 * Build: cc -shared -fPIC $(pkg-config --cflags p11-kit-1) -o sandbox_probe.so sandbox_probe.c -ldl */
#define _GNU_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define TARGET "/usr/lib/softhsm/libsofthsm2.so"

static void probe(FILE *report)
{
	char *paths = getenv("SANDBOX_PROBE") ? strdup(getenv("SANDBOX_PROBE")) : NULL;
	gid_t groups[64];
	int n = getgroups(64, groups), fd;

	fprintf(report, "ids uid=%u gid=%u groups=", (unsigned)getuid(), (unsigned)getgid());
	for (int i = 0; i < n; i++)
		fprintf(report, "%s%u", i ? "," : "", (unsigned)groups[i]);
	fputc('\n', report);
	for (char *save = NULL, *p = paths ? strtok_r(paths, ",", &save) : NULL; p; p = strtok_r(NULL, ",", &save)) {
		fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		fprintf(report, "write %s %s\n", p, fd >= 0 ? "ok" : strerrorname_np(errno));
		if (fd >= 0) {
			close(fd);
			unlink(p);
		}
	}
	free(paths);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	fprintf(report, "socket inet %s\n", fd >= 0 ? "ok" : strerrorname_np(errno));
	if (fd >= 0)
		close(fd);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	const char *path = getenv("SANDBOX_PROBE_REPORT");
	CK_C_GetFunctionList get_list;
	void *target;

	if (path) {
		FILE *report = fopen(path, "ae");

		if (report) {
			probe(report);
			fclose(report);
		}
	}
	target = dlopen(TARGET, RTLD_NOW | RTLD_LOCAL);
	if (!target)
		return CKR_GENERAL_ERROR;
	get_list = (CK_C_GetFunctionList)dlsym(target, "C_GetFunctionList");
	return get_list ? get_list(list) : CKR_GENERAL_ERROR;
}
