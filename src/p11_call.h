/* Every call into the PKCS#11 module - its dlopen, each C_* function, its dlclose -
 * runs under a deadline and with the stop signals held.
 *
 * - The deadline: a module that does not return within pkcs11.call_timeout
 *   seconds ends the process, with one log line naming the function. It is a
 *   timer of the relay's own (timer_create) with a realtime signal of its own, so
 *   that a module's alarm() or setitimer() can neither cancel nor move it.
 * - SIGTERM, SIGINT and SIGHUP are blocked during the call and take effect as soon
 *   as it returns: a module ended inside C_Login can leave the token's file empty
 *   (SoftHSM rewrites it then), which loses the token for every later connection.
 *   Threads the module starts inside a call inherit the blocked signals.
 *
 * Until p11_call_init, calls run unguarded (the benchmark's in-process limit). */
#ifndef KR_P11_CALL_H
#define KR_P11_CALL_H

#include <p11-kit/pkcs11.h>

#include "errors.h"

/* Creates the timer and installs its handler; the log must be open (the handler
 * writes with log_emergency). */
int p11_call_init(unsigned timeout_seconds) KR_WUR;

/* Around one call: begin arms the deadline for function (a string literal, named
 * in the log line if it expires) and blocks the stop signals; end disarms and
 * unblocks, and a stop signal that came meanwhile ends the process there. */
void p11_call_begin(const char *function);
void p11_call_end(void);

static inline CK_RV p11_call_end_rv(CK_RV rv)
{
	p11_call_end();
	return rv;
}

/* One guarded call that returns a CK_RV: P11_CALL("C_Login", f->C_Login(...)). The
 * call's arguments are evaluated after the deadline is armed. */
#define P11_CALL(function, call) (p11_call_begin(function), p11_call_end_rv(call))

#endif
