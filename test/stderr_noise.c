/* SPDX-License-Identifier: BSD-3-Clause */
/* A preload library for the tests: it stands for a PKCS#11 module that prints.
 * Its constructor starts a thread that writes "GARBAGE\n" to fd 1 and fd 2
 * every 10 ms for 2 s.
 *
 * The first write comes STDERR_NOISE_DELAY_MS milliseconds (default 100) after
 * the process starts. A module is loaded only after the relay has taken its
 * connection and pointed fds 0-2 at /dev/null, and that redirection is what the
 * tests check; bytes written before main() runs are outside any program's
 * control, so the delay keeps them out of the test.
 *
 * Build: cc -shared -fPIC -pthread -o stderr_noise.so stderr_noise.c
 * Use:   LD_PRELOAD=/path/to/stderr_noise.so program */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define PERIOD_MS 10
#define DURATION_MS 2000

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void *noise(void *arg)
{
	static const char line[] = "GARBAGE\n";
	long delay = (long)(intptr_t)arg;

	sleep_ms(delay);
	for (long t = 0; t < DURATION_MS; t += PERIOD_MS) {
		/* Errors (a closed fd, a reset socket) are ignored, as a module's are. */
		ssize_t r = write(STDOUT_FILENO, line, sizeof(line) - 1);

		r = write(STDERR_FILENO, line, sizeof(line) - 1);
		(void)r;
		sleep_ms(PERIOD_MS);
	}
	return NULL;
}

__attribute__((constructor)) static void stderr_noise_start(void)
{
	const char *env = getenv("STDERR_NOISE_DELAY_MS");
	long delay = env && *env ? strtol(env, NULL, 10) : 100;
	pthread_attr_t attr;
	pthread_t thread;

	if (delay < 0 || delay > 60000)
		delay = 100;
	if (pthread_attr_init(&attr) != 0)
		return;
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_create(&thread, &attr, noise, (void *)(intptr_t)delay);
	pthread_attr_destroy(&attr);
}
