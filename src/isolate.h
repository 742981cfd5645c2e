/* SPDX-License-Identifier: BSD-3-Clause */
/* Work on a PKCS#11 module in a child process of its own, for --check-config and
 * --probe: a module that crashes, aborts or hangs ends that process, and the
 * caller reports it. The child's module calls run under pkcs11.call_timeout
 * (p11_call.h), its standard descriptors point at /dev/null, it dumps no core
 * (it holds the PIN), and it writes lines to its parent through a pipe. A call
 * that crashes or outlasts the deadline is told to the parent as a line of its
 * own, before the process ends - whichever way it then ends (a sanitizer ends a
 * crash with its own exit status). */
#ifndef KR_ISOLATE_H
#define KR_ISOLATE_H

#include <stdbool.h>
#include <stdio.h>

#include "errors.h"

/* How the child ended. */
struct isolate_end {
	bool died;       /* inside a module call, or by a signal */
	char cause[16];  /* then: "SIGSEGV", "SIGABRT"..., or "timeout" */
	int status;      /* else its exit status */
};

/* Runs work(arg, out) in a child whose lines to out come to line(arg, text), one
 * at a time, without their newline; then waits for it. 0 and *ret, or
 * KR_E_SYSTEM (errno) if no child could be started. */
int isolate_run(unsigned call_timeout, void (*work)(void *arg, FILE *out), void (*line)(void *arg, char *text),
		void *arg, struct isolate_end *ret) KR_WUR;

#endif
