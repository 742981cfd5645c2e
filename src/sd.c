/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "sd.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

/* The library's stable soname since systemd 209. */
#define LIBSYSTEMD "libsystemd.so.0"

static struct {
	bool tried;
	int (*listen_fds)(int);
	int (*is_socket)(int, int, int, int);
	int (*journal_sendv)(const struct iovec *, int);
} sd;

/* Resolves every function once; all or none. */
static bool load(void)
{
	void *dl;

	if (sd.tried)
		return sd.listen_fds != NULL;
	sd.tried = true;
	if (!(dl = dlopen(LIBSYSTEMD, RTLD_NOW | RTLD_LOCAL)))
		return false;
	*(void **)&sd.listen_fds = dlsym(dl, "sd_listen_fds");
	*(void **)&sd.is_socket = dlsym(dl, "sd_is_socket");
	*(void **)&sd.journal_sendv = dlsym(dl, "sd_journal_sendv");
	if (!sd.listen_fds || !sd.is_socket || !sd.journal_sendv) {
		sd.listen_fds = NULL;
		return false;
	}
	return true;
}

int sd_lazy_listen_fds(int unset_environment)
{
	return load() ? sd.listen_fds(unset_environment) : -ENOSYS;
}

int sd_lazy_is_socket(int fd, int family, int type, int listening)
{
	return load() ? sd.is_socket(fd, family, type, listening) : -ENOSYS;
}

int sd_lazy_journal_sendv(const struct iovec *iov, int n)
{
	return load() ? sd.journal_sendv(iov, n) : -ENOSYS;
}
