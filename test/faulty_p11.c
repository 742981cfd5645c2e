/* SPDX-License-Identifier: BSD-3-Clause */
/* A PKCS#11 module for the tests that misbehaves on command. It wraps a real
 * module (SoftHSM2 by default) and forwards every call to it, except that one
 * function can be told to fail in one way:
 *
 *   FAULTY_P11_FAULT="<function>:<action>", e.g. "C_Login:segv", or several such
 *     faults for different functions separated by ';', where action is
 *     segv     a real write through a NULL pointer (SIGSEGV)
 *     abort    abort() (SIGABRT)
 *     garbage  "GARBAGE\n" lines written to fd 1 and fd 2, then the call is
 *              forwarded as usual
 *     hang     sleep FAULTY_P11_HANG_SECONDS (default 30), then forward; when
 *              the sleep ends, "<pid> <function> hang-end" is noted
 *     hang-unalarm
 *              first cancel what alarm() and setitimer(ITIMER_REAL) armed and
 *              ignore SIGALRM, as a module may, then hang as above
 *     limits   note "limits=dumpable:D,core:SOFT:HARD" instead of the action:
 *              prctl(PR_GET_DUMPABLE) and RLIMIT_CORE inside the process that
 *              loaded the module ("unlimited" for RLIM_INFINITY), then forward
 *     corrupt  forward, then, if the call succeeded, flip the lowest bit of the
 *              last byte of its output (C_Sign's signature, C_GenerateRandom's
 *              bytes, C_Encrypt's ciphertext...): a token that returns wrong
 *              results; functions without an output buffer are only forwarded
 *     rv=NAME  return that CK_RV without forwarding: CKR_RANDOM_NO_RNG,
 *              CKR_DEVICE_ERROR or another name in rv_names below, or a number
 *              such as 0x121; anything else returns CKR_GENERAL_ERROR
 *     count    forward as usual: only the FAULTY_P11_LOG line, which counts
 *              the calls that reach the token
 *     flags=NAME|NAME...  C_GetTokenInfo only: forward, then set these flags
 *              in the token's CK_TOKEN_INFO (CKF_USER_PIN_FINAL_TRY,
 *              CKF_USER_PIN_LOCKED, CKF_USER_PIN_COUNT_LOW, or numbers): a
 *              token whose user PIN is about to lock, or locked
 *   FAULTY_P11_FAULT_FILE=path   the fault is read from this file (first line) on
 *              every call instead, so that a test can change it between
 *              connections; a missing or empty file means no fault
 *   FAULTY_P11_TARGET=path       the wrapped module
 *              (default /usr/lib/softhsm/libsofthsm2.so)
 *   FAULTY_P11_LOG=path          each fault, as it fires, appends a line
 *              "<pid> <function> <action>" here
 *
 * <function> may also be "dlopen": the fault fires while the module is loaded
 * (in its constructor), where only segv, abort, hang and hang-unalarm apply.
 *
 * It is built without sanitizers, so that it loads into any program.
 * Build: cc -shared -fPIC $(pkg-config --cflags p11-kit-1) -o faulty_p11.so faulty_p11.c */
#define _GNU_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define DEFAULT_TARGET "/usr/lib/softhsm/libsofthsm2.so"
#define DEFAULT_HANG_SECONDS 30

static void *target_dl;
static CK_FUNCTION_LIST *target;

/* The fault in force now, as "<function>:<action>", into buf; "" for none. */
static void current_fault(char *buf, size_t size)
{
	const char *file = getenv("FAULTY_P11_FAULT_FILE"), *env = getenv("FAULTY_P11_FAULT");
	ssize_t n = 0;

	buf[0] = '\0';
	if (file) {
		int fd = open(file, O_RDONLY | O_CLOEXEC);

		if (fd < 0)
			return;
		n = read(fd, buf, size - 1);
		close(fd);
		buf[n > 0 ? n : 0] = '\0';
	} else if (env) {
		snprintf(buf, size, "%s", env);
	}
	buf[strcspn(buf, "\r\n")] = '\0';
}

static void note(const char *function, const char *action)
{
	const char *path = getenv("FAULTY_P11_LOG");
	char line[128];
	int fd, n;

	if (!path || (fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) < 0)
		return;
	n = snprintf(line, sizeof(line), "%ld %s %s\n", (long)getpid(), function, action);
	if (n > 0 && write(fd, line, (size_t)n) < 0)
		(void)0; /* nothing to do about it */
	close(fd);
}

static void hang(const char *function)
{
	const char *env = getenv("FAULTY_P11_HANG_SECONDS");
	struct timespec ts = { env && *env ? atol(env) : DEFAULT_HANG_SECONDS, 0 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	note(function, "hang-end");
}

/* What a module may do to the process's SIGALRM timers. */
static void unalarm(void)
{
	static const struct itimerval off;

	alarm(0);
	setitimer(ITIMER_REAL, &off, NULL);
	signal(SIGALRM, SIG_IGN);
}

static void rlimit_text(rlim_t v, char *out, size_t size)
{
	if (v == RLIM_INFINITY)
		snprintf(out, size, "unlimited");
	else
		snprintf(out, size, "%llu", (unsigned long long)v);
}

/* Notes whether this process may leave a core dump. */
static void note_limits(const char *function)
{
	struct rlimit core = { 0, 0 };
	char soft[24], hard[24], action[96];

	getrlimit(RLIMIT_CORE, &core);
	rlimit_text(core.rlim_cur, soft, sizeof(soft));
	rlimit_text(core.rlim_max, hard, sizeof(hard));
	snprintf(action, sizeof(action), "limits=dumpable:%d,core:%s:%s", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), soft,
		 hard);
	note(function, action);
}

static void garbage(void)
{
	static const char line[] = "GARBAGE\nGARBAGE\nGARBAGE\n";

	/* Errors (a closed fd, a reset socket) are ignored, as a module's would be. */
	if (write(STDOUT_FILENO, line, sizeof(line) - 1) < 0 || write(STDERR_FILENO, line, sizeof(line) - 1) < 0)
		(void)0;
}

static const struct {
	const char *name;
	CK_RV rv;
} rv_names[] = {
#define RV(rv) { #rv, rv }
	RV(CKR_HOST_MEMORY), RV(CKR_GENERAL_ERROR), RV(CKR_FUNCTION_FAILED),
	RV(CKR_DEVICE_ERROR), RV(CKR_DEVICE_MEMORY), RV(CKR_DEVICE_REMOVED), RV(CKR_TOKEN_NOT_PRESENT),
	RV(CKR_SESSION_HANDLE_INVALID), RV(CKR_FUNCTION_NOT_SUPPORTED), RV(CKR_MECHANISM_INVALID),
	RV(CKR_KEY_FUNCTION_NOT_PERMITTED), RV(CKR_RANDOM_NO_RNG),
#undef RV
};

/* The token flags that "flags=<NAME|NAME...>" names; unknown names count for nothing. */
static CK_FLAGS flags_value(const char *value)
{
	static const struct {
		const char *name;
		CK_FLAGS flag;
	} names[] = {
		{ "CKF_USER_PIN_COUNT_LOW", CKF_USER_PIN_COUNT_LOW },
		{ "CKF_USER_PIN_FINAL_TRY", CKF_USER_PIN_FINAL_TRY },
		{ "CKF_USER_PIN_LOCKED", CKF_USER_PIN_LOCKED },
	};
	char buf[128], *next = NULL;
	CK_FLAGS flags = 0;

	snprintf(buf, sizeof(buf), "%s", value);
	for (char *name = strtok_r(buf, "|", &next); name; name = strtok_r(NULL, "|", &next)) {
		size_t i = 0;

		while (i < sizeof(names) / sizeof(names[0]) && strcmp(name, names[i].name) != 0)
			i++;
		flags |= i < sizeof(names) / sizeof(names[0]) ? names[i].flag : strtoul(name, NULL, 0);
	}
	return flags;
}

/* The CK_RV that "rv=<value>" names. */
static CK_RV rv_value(const char *value)
{
	char *end;
	unsigned long n;

	for (size_t i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++)
		if (strcmp(value, rv_names[i].name) == 0)
			return rv_names[i].rv;
	errno = 0;
	n = strtoul(value, &end, 0);
	return *value && !*end && errno == 0 ? (CK_RV)n : CKR_GENERAL_ERROR;
}

/* An output buffer of *len bytes, one bit changed; nothing to do for a size query
 * (no buffer) or an empty output. */
static void corrupt(CK_BYTE_PTR out, const CK_ULONG *len)
{
	if (out && len && *len > 0)
		out[*len - 1] ^= 0x01;
}

/* What the forwarder does once maybe_fault returns. */
enum effect { AS_USUAL, CORRUPT_OUTPUT, RETURN_RV, ADD_FLAGS };

/* Called on entry to every function: misbehaves if the fault names this one, or
 * tells the forwarder how to (*ret_rv: the CK_RV for RETURN_RV, the CK_FLAGS for
 * ADD_FLAGS). */
static enum effect maybe_fault(const char *function, CK_RV *ret_rv)
{
	char fault[256], *next = NULL, *action;
	size_t len = strlen(function);

	current_fault(fault, sizeof(fault));
	for (action = strtok_r(fault, ";", &next); action; action = strtok_r(NULL, ";", &next))
		if (strncmp(action, function, len) == 0 && action[len] == ':')
			break;
	if (!action)
		return AS_USUAL;
	action += len + 1;
	if (strcmp(action, "limits") == 0) {
		note_limits(function);
		return AS_USUAL;
	}
	note(function, action);
	if (strcmp(action, "segv") == 0) {
		volatile int *volatile p = NULL; /* neither the load nor the store can go */

		*p = 42;
	} else if (strcmp(action, "abort") == 0) {
		abort();
	} else if (strcmp(action, "garbage") == 0) {
		garbage();
	} else if (strcmp(action, "hang") == 0) {
		hang(function);
	} else if (strcmp(action, "hang-unalarm") == 0) {
		unalarm();
		hang(function);
	} else if (strcmp(action, "corrupt") == 0) {
		return CORRUPT_OUTPUT;
	} else if (strncmp(action, "rv=", 3) == 0) {
		*ret_rv = rv_value(action + 3);
		return RETURN_RV;
	} else if (strncmp(action, "flags=", 6) == 0) {
		*ret_rv = flags_value(action + 6);
		return ADD_FLAGS;
	}
	return AS_USUAL;
}

/* Every function of the 2.40 list but C_GetFunctionList: its name, its
 * parameters, the arguments that forward them, and its output buffer with a
 * pointer to its length, for corrupt ((NULL, NULL): none). */
#define P11_FUNCTIONS(X) \
	X(C_Initialize, (void *a), (a), (NULL, NULL)) \
	X(C_Finalize, (void *a), (a), (NULL, NULL)) \
	X(C_GetInfo, (CK_INFO_PTR a), (a), (NULL, NULL)) \
	X(C_GetSlotList, (CK_BBOOL a, CK_SLOT_ID_PTR b, CK_ULONG_PTR c), (a, b, c), (NULL, NULL)) \
	X(C_GetSlotInfo, (CK_SLOT_ID a, CK_SLOT_INFO_PTR b), (a, b), (NULL, NULL)) \
	X(C_GetMechanismList, (CK_SLOT_ID a, CK_MECHANISM_TYPE_PTR b, CK_ULONG_PTR c), (a, b, c), (NULL, NULL)) \
	X(C_GetMechanismInfo, (CK_SLOT_ID a, CK_MECHANISM_TYPE b, CK_MECHANISM_INFO_PTR c), (a, b, c), (NULL, NULL)) \
	X(C_InitToken, (CK_SLOT_ID a, CK_UTF8CHAR_PTR b, CK_ULONG c, CK_UTF8CHAR_PTR d), (a, b, c, d), (NULL, NULL)) \
	X(C_InitPIN, (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c), (a, b, c), (NULL, NULL)) \
	X(C_SetPIN, (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c, CK_UTF8CHAR_PTR d, CK_ULONG e), \
	  (a, b, c, d, e), (NULL, NULL)) \
	X(C_OpenSession, (CK_SLOT_ID a, CK_FLAGS b, void *c, CK_NOTIFY d, CK_SESSION_HANDLE_PTR e), \
	  (a, b, c, d, e), (NULL, NULL)) \
	X(C_CloseSession, (CK_SESSION_HANDLE a), (a), (NULL, NULL)) \
	X(C_CloseAllSessions, (CK_SLOT_ID a), (a), (NULL, NULL)) \
	X(C_GetSessionInfo, (CK_SESSION_HANDLE a, CK_SESSION_INFO_PTR b), (a, b), (NULL, NULL)) \
	X(C_GetOperationState, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c), (b, c)) \
	X(C_SetOperationState, \
	  (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_OBJECT_HANDLE d, CK_OBJECT_HANDLE e), \
	  (a, b, c, d, e), (NULL, NULL)) \
	X(C_Login, (CK_SESSION_HANDLE a, CK_USER_TYPE b, CK_UTF8CHAR_PTR c, CK_ULONG d), (a, b, c, d), (NULL, NULL)) \
	X(C_Logout, (CK_SESSION_HANDLE a), (a), (NULL, NULL)) \
	X(C_CreateObject, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c, CK_OBJECT_HANDLE_PTR d), \
	  (a, b, c, d), (NULL, NULL)) \
	X(C_CopyObject, \
	  (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e), \
	  (a, b, c, d, e), (NULL, NULL)) \
	X(C_DestroyObject, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b), (a, b), (NULL, NULL)) \
	X(C_GetObjectSize, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ULONG_PTR c), (a, b, c), (NULL, NULL)) \
	X(C_GetAttributeValue, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d), \
	  (a, b, c, d), (NULL, NULL)) \
	X(C_SetAttributeValue, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d), \
	  (a, b, c, d), (NULL, NULL)) \
	X(C_FindObjectsInit, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c), (a, b, c), (NULL, NULL)) \
	X(C_FindObjects, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE_PTR b, CK_ULONG c, CK_ULONG_PTR d), \
	  (a, b, c, d), (NULL, NULL)) \
	X(C_FindObjectsFinal, (CK_SESSION_HANDLE a), (a), (NULL, NULL)) \
	X(C_EncryptInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c), (NULL, NULL)) \
	X(C_Encrypt, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), \
	  (a, b, c, d, e), (d, e)) \
	X(C_EncryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), \
	  (a, b, c, d, e), (d, e)) \
	X(C_EncryptFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c), (b, c)) \
	X(C_DecryptInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c), (NULL, NULL)) \
	X(C_Decrypt, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), \
	  (a, b, c, d, e), (d, e)) \
	X(C_DecryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), \
	  (a, b, c, d, e), (d, e)) \
	X(C_DecryptFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c), (b, c)) \
	X(C_DigestInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b), (a, b), (NULL, NULL)) \
	X(C_Digest, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), \
	  (a, b, c, d, e), (d, e)) \
	X(C_DigestUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c), (NULL, NULL)) \
	X(C_DigestKey, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b), (a, b), (NULL, NULL)) \
	X(C_DigestFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c), (b, c)) \
	X(C_SignInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c), (NULL, NULL)) \
	X(C_Sign, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), \
	  (a, b, c, d, e), (d, e)) \
	X(C_SignUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c), (NULL, NULL)) \
	X(C_SignFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c), (b, c)) \
	X(C_SignRecoverInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c), (NULL, NULL)) \
	X(C_SignRecover, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), \
	  (a, b, c, d, e), (d, e)) \
	X(C_VerifyInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c), (NULL, NULL)) \
	X(C_Verify, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG e), \
	  (a, b, c, d, e), (NULL, NULL)) \
	X(C_VerifyUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c), (NULL, NULL)) \
	X(C_VerifyFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c), (NULL, NULL)) \
	X(C_VerifyRecoverInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c), (NULL, NULL)) \
	X(C_VerifyRecover, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), \
	  (a, b, c, d, e), (d, e)) \
	X(C_DigestEncryptUpdate, \
	  (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e), (d, e)) \
	X(C_DecryptDigestUpdate, \
	  (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e), (d, e)) \
	X(C_SignEncryptUpdate, \
	  (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e), (d, e)) \
	X(C_DecryptVerifyUpdate, \
	  (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e), (d, e)) \
	X(C_GenerateKey, \
	  (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e), \
	  (a, b, c, d, e), (NULL, NULL)) \
	X(C_GenerateKeyPair, \
	  (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_ATTRIBUTE_PTR e, \
	   CK_ULONG f, CK_OBJECT_HANDLE_PTR g, CK_OBJECT_HANDLE_PTR h), \
	  (a, b, c, d, e, f, g, h), (NULL, NULL)) \
	X(C_WrapKey, \
	  (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_OBJECT_HANDLE d, CK_BYTE_PTR e, \
	   CK_ULONG_PTR f), \
	  (a, b, c, d, e, f), (e, f)) \
	X(C_UnwrapKey, \
	  (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_BYTE_PTR d, CK_ULONG e, \
	   CK_ATTRIBUTE_PTR f, CK_ULONG g, CK_OBJECT_HANDLE_PTR h), \
	  (a, b, c, d, e, f, g, h), (NULL, NULL)) \
	X(C_DeriveKey, \
	  (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_ATTRIBUTE_PTR d, CK_ULONG e, \
	   CK_OBJECT_HANDLE_PTR f), \
	  (a, b, c, d, e, f), (NULL, NULL)) \
	X(C_SeedRandom, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c), (NULL, NULL)) \
	X(C_GenerateRandom, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c), (b, &c)) \
	X(C_GetFunctionStatus, (CK_SESSION_HANDLE a), (a), (NULL, NULL)) \
	X(C_CancelFunction, (CK_SESSION_HANDLE a), (a), (NULL, NULL)) \
	X(C_WaitForSlotEvent, (CK_FLAGS a, CK_SLOT_ID_PTR b, void *c), (a, b, c), (NULL, NULL))

/* The forwarders: faulty_C_Login and so on. */
#define FORWARD(name, params, args, output) \
	static CK_RV faulty_##name params \
	{ \
		CK_RV rv = CKR_OK; \
		enum effect effect = maybe_fault(#name, &rv); \
\
		if (effect == RETURN_RV) \
			return rv; \
		rv = target->name args; \
		if (effect == CORRUPT_OUTPUT && rv == CKR_OK) \
			corrupt output; \
		return rv; \
	}
P11_FUNCTIONS(FORWARD)

/* By hand: flags= changes its output. */
static CK_RV faulty_C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
	CK_RV rv = CKR_OK;
	enum effect effect = maybe_fault("C_GetTokenInfo", &rv);
	CK_FLAGS flags = rv;

	if (effect == RETURN_RV)
		return rv;
	rv = target->C_GetTokenInfo(slot, info);
	if (effect == ADD_FLAGS && rv == CKR_OK)
		info->flags |= flags;
	return rv;
}

static CK_FUNCTION_LIST functions = {
	.version = { CRYPTOKI_VERSION_MAJOR, CRYPTOKI_VERSION_MINOR },
	.C_GetFunctionList = C_GetFunctionList,
	.C_GetTokenInfo = faulty_C_GetTokenInfo,
#define ENTRY(name, params, args, output) .name = faulty_##name,
	P11_FUNCTIONS(ENTRY)
};

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	const char *path = getenv("FAULTY_P11_TARGET");
	CK_C_GetFunctionList get_list;
	CK_RV rv = CKR_OK;

	if (maybe_fault("C_GetFunctionList", &rv) == RETURN_RV)
		return rv;
	if (!list)
		return CKR_ARGUMENTS_BAD;
	if (!target) {
		if (!target_dl && !(target_dl = dlopen(path && *path ? path : DEFAULT_TARGET, RTLD_NOW | RTLD_LOCAL)))
			return CKR_GENERAL_ERROR;
		get_list = (CK_C_GetFunctionList)dlsym(target_dl, "C_GetFunctionList");
		if (!get_list || get_list(&target) != CKR_OK || !target)
			return CKR_GENERAL_ERROR;
	}
	*list = &functions;
	return CKR_OK;
}

__attribute__((constructor)) static void faulty_load(void)
{
	CK_RV rv;

	maybe_fault("dlopen", &rv);
}

__attribute__((destructor)) static void faulty_unload(void)
{
	if (target_dl)
		dlclose(target_dl);
}
