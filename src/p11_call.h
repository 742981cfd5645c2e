/* SPDX-License-Identifier: BSD-3-Clause */
/* Every call into the PKCS#11 module - its dlopen, each C_* function, its dlclose -
 * runs under a deadline and with the stop signals held.
 *
 * - The deadline: a module that does not return within pkcs11.call_timeout
 *   seconds ends the process, with one log line naming the function.
 * - SIGTERM, SIGINT and SIGHUP take effect as soon as the call returns, never
 *   inside it: a module ended inside C_Login can leave the token's file empty
 *   (SoftHSM rewrites it then), which loses the token for every later
 *   connection. Outside a call they take effect at once.
 *
 * Both are a watcher thread's: the stop signals stay blocked in the other
 * threads (threads the module starts inherit that), the watcher takes them with
 * sigtimedwait, and it looks at the call in progress four times a second. So a
 * call costs no system call (Sign is the hot path: blocking the signals and
 * arming a timer around each call cost about 5 us a Sign), nothing the module
 * does to signals or timers (alarm(), setitimer(), SIGALRM, masks) moves the
 * deadline, and no signal of the relay's ever interrupts the module.
 *
 * A call may have an owner (a pool's backend, health.h) that is told, in an
 * async-signal-safe way, when the call outlasts its deadline or when the module
 * crashes the process inside it (SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE), before
 * the process ends.
 *
 * Until p11_call_init, calls run unguarded (the benchmark's in-process limit). */
#ifndef KR_P11_CALL_H
#define KR_P11_CALL_H

#include <p11-kit/pkcs11.h>

#include "errors.h"

/* Who answers for a call. failed runs in the watcher or in a signal handler: it
 * may only use async-signal-safe functions (write, pwrite, clock_gettime...). cause
 * is "timeout" or the signal's name ("SIGSEGV"). */
struct p11_call_owner {
	void (*failed)(const struct p11_call_owner *owner, const char *cause);
};

/* Starts the watcher, blocks the stop signals and catches the crash signals; the
 * log must be open (an expiry writes with log_emergency). */
int p11_call_init(unsigned timeout_seconds) KR_WUR;

/* A witness is told of every call that outlasts its deadline or crashes, as its
 * owner is (--check-config and --probe tell their parent process so, in their
 * child processes, where a sanitizer may end a crash its own way). NULL: none. */
void p11_call_set_witness(const struct p11_call_owner *w);

/* Around one call: begin notes function (a string literal, named in the log
 * line if the call outlasts the timeout) and its owner (or NULL) as in progress;
 * end notes that it returned. A stop signal that came meanwhile ends the process
 * in end. */
void p11_call_begin(const char *function, const struct p11_call_owner *owner);
void p11_call_end(void);

static inline CK_RV p11_call_end_rv(CK_RV rv)
{
	p11_call_end();
	return rv;
}

/* One guarded call that returns a CK_RV: P11_CALL(owner, "C_Login", f->C_Login(...)).
 * The call's arguments are evaluated after begin. */
#define P11_CALL(owner, function, call) (p11_call_begin(function, owner), p11_call_end_rv(call))

#endif
