#include "config.h"

#include "p11_call.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* A realtime signal: nothing the module does to SIGALRM reaches it. */
#define DEADLINE_SIGNAL (SIGRTMIN + 2)

_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2, "the handler reads the function's name without a lock");

static bool guarded;
static timer_t timer;
static struct itimerspec deadline;
static sigset_t normal_mask, call_mask; /* call_mask: normal_mask and the stop signals */
static _Atomic(const char *) current;   /* the function being called; NULL between calls */
static char expiry_tail[96];            /* the log line after the function's name */

/* Async-signal-safe: plain copying, no formatting. */
static size_t append(char *out, size_t off, size_t size, const char *s)
{
	while (*s && off < size - 1)
		out[off++] = *s++;
	return off;
}

static void expired(int sig, siginfo_t *si, void *context)
{
	const char *function = current;
	char message[160];
	size_t n;

	(void)sig;
	(void)context;
	/* Only the relay's own timer, during a call: not the same signal sent by
	 * kill() or sigqueue(), nor an expiry as the call returned. */
	if (si->si_code != SI_TIMER || si->si_value.sival_ptr != &timer || !function)
		return;
	n = append(message, 0, sizeof(message), "pkcs11: ");
	n = append(message, n, sizeof(message), function);
	n = append(message, n, sizeof(message), expiry_tail);
	message[n] = '\0';
	log_emergency(message);
	_exit(EXIT_FAILURE);
}

int p11_call_init(unsigned timeout_seconds)
{
	struct sigaction sa = { .sa_sigaction = expired, .sa_flags = SA_SIGINFO | SA_RESTART };
	struct sigevent ev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = DEADLINE_SIGNAL,
			       .sigev_value.sival_ptr = &timer };

	/* Inherited blocked, the deadline would never fire. */
	if (sigprocmask(SIG_BLOCK, NULL, &normal_mask) < 0 || sigdelset(&normal_mask, DEADLINE_SIGNAL) < 0 ||
	    sigprocmask(SIG_SETMASK, &normal_mask, NULL) < 0)
		return KR_E_SYSTEM;
	call_mask = normal_mask;
	if (sigaddset(&call_mask, SIGTERM) < 0 || sigaddset(&call_mask, SIGINT) < 0 || sigaddset(&call_mask, SIGHUP) < 0)
		return KR_E_SYSTEM;
	/* A stop signal waits while the line is written. */
	sa.sa_mask = call_mask;
	if (sigaction(DEADLINE_SIGNAL, &sa, NULL) < 0 || timer_create(CLOCK_MONOTONIC, &ev, &timer) < 0)
		return KR_E_SYSTEM;
	deadline.it_value.tv_sec = (time_t)timeout_seconds;
	snprintf(expiry_tail, sizeof(expiry_tail), " did not return within %u s (pkcs11.call_timeout); exiting",
		 timeout_seconds);
	guarded = true;
	return 0;
}

void p11_call_begin(const char *function)
{
	if (!guarded)
		return;
	sigprocmask(SIG_SETMASK, &call_mask, NULL);
	current = function;
	timer_settime(timer, 0, &deadline, NULL);
}

void p11_call_end(void)
{
	static const struct itimerspec disarmed;

	if (!guarded)
		return;
	timer_settime(timer, 0, &disarmed, NULL);
	current = NULL;
	sigprocmask(SIG_SETMASK, &normal_mask, NULL);
}
