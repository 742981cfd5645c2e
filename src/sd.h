/* SPDX-License-Identifier: BSD-3-Clause */
/* libsystemd, loaded when first needed. Most connections never call it - under
 * inetd, with --listen, or when the log does not go to the journal - and linking
 * it would map seven more libraries into every process at start (it pulls in lz4,
 * zstd, lzma, gcrypt, gpg-error and capability), a cost paid per connection. The
 * functions are libsystemd's; when it cannot be loaded they fail with -ENOSYS. */
#ifndef KR_SD_H
#define KR_SD_H

#include <sys/uio.h>

int sd_lazy_listen_fds(int unset_environment);
int sd_lazy_is_socket(int fd, int family, int type, int listening);
int sd_lazy_journal_sendv(const struct iovec *iov, int n);

#endif
