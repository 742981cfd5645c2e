/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "p11.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/file.h>
#include <unistd.h>
#include <stdbool.h>
#include <gnutls/crypto.h>
#include <p11-kit/uri.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "p11_call.h"

/* A call into the module, under the deadline and with the stop signals held
 * (p11_call.h). */
#define CALL(t, fn, ...) P11_CALL((t)->owner, #fn, (t)->f->fn(__VA_ARGS__))

/* A module, loaded and initialised once per process however many of its tokens
 * the process opens (a pool's backends may share one). */
struct p11_module {
	struct p11_module *next;
	char *path;
	void *dl;
	CK_FUNCTION_LIST *f;
	bool ready;       /* C_Initialize done */
	bool initialized; /* by this process: it finalises too */
	unsigned refs;    /* its open tokens; 0: loaded only */
};

static struct p11_module *modules;

struct p11_token {
	struct p11_module *m;
	CK_FUNCTION_LIST *f; /* m's */
	const struct p11_call_owner *owner;
	CK_RV device_rv; /* the first device-class failure, or CKR_OK */
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE session;
	bool has_session;
	CK_RV last_rv;
	unsigned long writes; /* calls that may have changed the token */
	/* The slot's mechanisms, read on first need; n_mechanisms < 0 until then. */
	CK_MECHANISM_TYPE *mechanisms;
	long n_mechanisms;
};

/* PKCS#11 3.0's C_GetInterface; p11-kit 0.24's header is 2.40. A 3.0 function list
 * starts with the 2.40 one, so it is used through CK_FUNCTION_LIST. */
struct ck_interface_30 {
	CK_UTF8CHAR *name;
	void *function_list;
	CK_FLAGS flags;
};
typedef CK_RV (*get_interface_fn)(CK_UTF8CHAR *name, CK_VERSION *version, struct ck_interface_30 **iface,
				  CK_FLAGS flags);

/* A failure's text with its cause (dlerror(), errno, a CKR_ name), formatted into
 * the caller's static buffer: *ret_why outlives the call. */
__attribute__((format(printf, 3, 4)))
static const char *because(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return buf;
}

/* A module call's refusal, counted for the metrics, as its CKR_ name. */
static const char *refusal(CK_RV rv)
{
	metrics_ckr(p11_rv_name(rv));
	return p11_rv_name(rv);
}

/* Loads a module (its constructors run here) and finds its function list, or
 * takes the one this process loaded already. Nothing is initialised: loading
 * needs no lock, and a module that is loaded but unused is not finalised. */
static int module_load(const char *path, const struct p11_call_owner *owner, struct p11_module **ret,
		       const char **ret_why)
{
	static char why[512];
	get_interface_fn get_interface;
	CK_C_GetFunctionList get_list;
	struct p11_module *m;
	CK_RV rv = CKR_OK;

	for (m = modules; m; m = m->next)
		if (strcmp(m->path, path) == 0) {
			*ret = m;
			return 0;
		}
	if (!(m = calloc(1, sizeof(*m))) || !(m->path = strdup(path))) {
		free(m);
		return KR_E_NOMEM;
	}
	/* It stays mapped after dlclose: a thread or exit handler it leaves behind
	 * (openCryptoki starts one) must not run unmapped code, and a leak report can
	 * name it. */
	p11_call_begin("dlopen", owner);
	m->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
	p11_call_end();
	if (!m->dl) {
		const char *err = dlerror();

		*ret_why = because(why, sizeof(why), "pkcs11.module: cannot load the module: %s",
				   err ? err : "(no reason given)");
		goto fail;
	}
	get_interface = (get_interface_fn)dlsym(m->dl, "C_GetInterface");
	if (get_interface) {
		struct ck_interface_30 *iface = NULL;

		if (P11_CALL(owner, "C_GetInterface", get_interface((CK_UTF8CHAR *)"PKCS 11", NULL, &iface, 0)) ==
			    CKR_OK &&
		    iface)
			m->f = iface->function_list;
	}
	if (!m->f) {
		get_list = (CK_C_GetFunctionList)dlsym(m->dl, "C_GetFunctionList");
		if (!get_list) {
			*ret_why = because(why, sizeof(why), "pkcs11.module: %s: not a PKCS#11 module (it has neither "
					   "C_GetInterface nor C_GetFunctionList)", path);
			goto fail;
		}
		if ((rv = P11_CALL(owner, "C_GetFunctionList", get_list(&m->f))) != CKR_OK || !m->f) {
			*ret_why = because(why, sizeof(why), "pkcs11.module: %s: C_GetFunctionList failed: %s", path,
					   rv != CKR_OK ? refusal(rv) : "no function list");
			goto fail;
		}
	}
	m->next = modules;
	modules = m;
	*ret = m;
	return 0;
fail:
	if (m->dl)
		dlclose(m->dl);
	free(m->path);
	free(m);
	return KR_E_P11_MODULE;
}

int p11_load(const char *path, const struct p11_call_owner *owner, const char **ret_why)
{
	struct p11_module *m;

	return module_load(path, owner, &m, ret_why);
}

/* A loaded module, initialised once (under the caller's lock), with one more
 * reference; module_put undoes a failure. */
static int module_get(const char *path, const struct p11_call_owner *owner, struct p11_module **ret,
		      const char **ret_why)
{
	static char why[512];
	CK_C_INITIALIZE_ARGS args = { .flags = CKF_OS_LOCKING_OK };
	struct p11_module *m;
	CK_RV rv;
	int r;

	if ((r = module_load(path, owner, &m, ret_why)) < 0)
		return r;
	m->refs++;
	*ret = m;
	if (m->ready)
		return 0;
	rv = P11_CALL(owner, "C_Initialize", m->f->C_Initialize(&args));
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		*ret_why = because(why, sizeof(why), "pkcs11.module: %s: C_Initialize failed: %s", path, refusal(rv));
		return KR_E_P11_MODULE;
	}
	m->initialized = rv == CKR_OK;
	m->ready = true;
	return 0;
}

/* Lets go of a module: the last of its tokens finalises and unloads it. */
static void module_put(struct p11_module *m, const struct p11_call_owner *owner)
{
	struct p11_module **p;

	if (!m || --m->refs > 0)
		return;
	for (p = &modules; *p != m; p = &(*p)->next)
		;
	*p = m->next;
	if (m->initialized)
		P11_CALL(owner, "C_Finalize", m->f->C_Finalize(NULL));
	if (m->dl) {
		p11_call_begin("dlclose", owner); /* the module's destructors run here */
		dlclose(m->dl);
		p11_call_end();
	}
	free(m->path);
	free(m);
}

/* The token's label without its blank padding. */
static size_t label_len(const CK_TOKEN_INFO *ti)
{
	size_t n = sizeof(ti->label);

	while (n > 0 && ti->label[n - 1] == ' ')
		n--;
	return n;
}

/* A whole non-negative decimal number that a slot ID can hold, or -1. SoftHSM's
 * slot IDs are 32-bit and most have 10 digits. */
static long long decimal(const char *s, size_t len)
{
	long long v = 0;

	if (len == 0 || len > 18)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return (long long)(CK_SLOT_ID)v == v ? v : -1;
}

static bool uri_matches(P11KitUri *uri, CK_SLOT_ID slot, CK_SLOT_INFO *si, CK_TOKEN_INFO *ti)
{
	CK_SLOT_ID want = p11_kit_uri_get_slot_id(uri);

	return (want == (CK_SLOT_ID)-1 || slot == want) && p11_kit_uri_match_slot_info(uri, si) &&
	       p11_kit_uri_match_token_info(uri, ti);
}

/* Whether a username may pick this token: only one that an allowed URI matches. */
static bool allowed(P11KitUri *const *allow, size_t n_allow, CK_SLOT_ID slot, CK_SLOT_INFO *si, CK_TOKEN_INFO *ti)
{
	for (size_t i = 0; i < n_allow; i++)
		if (uri_matches(allow[i], slot, si, ti))
			return true;
	return false;
}

/* Picks the slot by URI, or by a client's username among the allowed tokens: the
 * token label, then the slot ID, then the slot index, as the Cascade bridge does. */
static int find_slot(struct p11_token *t, P11KitUri *uri, const char *uri_text, const char *username,
		     size_t username_len, P11KitUri *const *allow, size_t n_allow, const char **ret_why)
{
	static char why[128], no_match[1024];
	CK_SLOT_ID *slots = NULL;
	long long number = username ? decimal(username, username_len) : -1;
	CK_ULONG n = 0;
	CK_RV rv;
	/* A username that picks no token is a wrong credential, as a wrong PIN is. */
	int r = username ? KR_E_P11_PIN : KR_E_P11_TOKEN;

	*ret_why = username ? "no token that the config allows has this username as label, slot ID or slot index"
			    : because(no_match, sizeof(no_match), "pkcs11.token: no token matches the URI %s", uri_text);
	if ((rv = CALL(t, C_GetSlotList, CK_TRUE, NULL, &n)) != CKR_OK) {
		*ret_why = because(why, sizeof(why), "pkcs11.token: cannot list the slots: %s", refusal(rv));
		return r;
	}
	if (n == 0)
		return r;
	slots = calloc(n, sizeof(*slots));
	if (!slots)
		return KR_E_NOMEM;
	if (CALL(t, C_GetSlotList, CK_TRUE, slots, &n) != CKR_OK)
		n = 0;
	for (int pass = 0; pass < (username ? 3 : 1) && r < 0; pass++) {
		for (CK_ULONG i = 0; i < n; i++) {
			CK_SLOT_INFO si;
			CK_TOKEN_INFO ti;
			bool match;

			if (CALL(t, C_GetSlotInfo, slots[i], &si) != CKR_OK ||
			    CALL(t, C_GetTokenInfo, slots[i], &ti) != CKR_OK)
				continue;
			if (!username)
				match = uri_matches(uri, slots[i], &si, &ti);
			else if (!allowed(allow, n_allow, slots[i], &si, &ti))
				match = false;
			else if (pass == 0)
				match = label_len(&ti) == username_len && memcmp(ti.label, username, username_len) == 0;
			else if (pass == 1)
				match = number >= 0 && slots[i] == (CK_SLOT_ID)number;
			else
				match = number >= 0 && i == (CK_ULONG)number;
			if (match) {
				t->slot = slots[i];
				r = 0;
				break;
			}
		}
	}
	free(slots);
	return r;
}

/* A token URI parsed into *ret (free it with p11_kit_uri_free). */
static int parse_token_uri(const char *text, P11KitUri **ret, const char **ret_why)
{
	P11KitUri *uri = p11_kit_uri_new();

	if (!uri)
		return KR_E_NOMEM;
	if (p11_kit_uri_parse(text, P11_KIT_URI_FOR_TOKEN | P11_KIT_URI_FOR_SLOT, uri) != P11_KIT_URI_OK) {
		p11_kit_uri_free(uri);
		*ret_why = "pkcs11.token: not a valid PKCS#11 URI";
		return KR_E_CONFIG;
	}
	*ret = uri;
	return 0;
}

int p11_open(const char *module, const char *token_uri, const char *username, size_t username_len,
	     const char *const *allow, size_t n_allow, const struct p11_call_owner *owner, struct p11_token **ret,
	     const char **ret_why)
{
	struct p11_token *t = calloc(1, sizeof(*t));
	P11KitUri *uri = NULL, **allow_uris = NULL;
	size_t n_allow_uris = 0;
	CK_RV rv;
	int r = 0;

	if (!t || (username && n_allow && !(allow_uris = calloc(n_allow, sizeof(*allow_uris))))) {
		r = KR_E_NOMEM;
		goto out;
	}
	t->n_mechanisms = -1;
	t->owner = owner;
	if (!username)
		r = parse_token_uri(token_uri ? token_uri : "pkcs11:", &uri, ret_why);
	for (size_t i = 0; username && r == 0 && i < n_allow; i++)
		if ((r = parse_token_uri(allow[i], &allow_uris[i], ret_why)) == 0)
			n_allow_uris++;
	if (r == 0 && (r = module_get(module, owner, &t->m, ret_why)) == 0)
		t->f = t->m->f;
	if (r < 0 ||
	    (r = find_slot(t, uri, token_uri ? token_uri : "pkcs11:", username, username_len, allow_uris, n_allow_uris,
			   ret_why)) < 0)
		goto out;
	if ((rv = CALL(t, C_OpenSession, t->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &t->session)) !=
	    CKR_OK) {
		static char why[128];

		t->last_rv = rv;
		*ret_why = because(why, sizeof(why), "pkcs11.token: cannot open a session: %s", refusal(rv));
		r = KR_E_P11_TOKEN;
		goto out;
	}
	t->has_session = true;
out:
	if (uri)
		p11_kit_uri_free(uri);
	for (size_t i = 0; i < n_allow_uris; i++)
		p11_kit_uri_free(allow_uris[i]);
	free(allow_uris);
	if (r < 0) {
		p11_close(t);
		return r;
	}
	*ret = t;
	return 0;
}

int p11_lock(const char *path, bool create, int *ret_fd, const char **ret_why)
{
	static char why[4096 + 128];
	int fd;

	*ret_fd = -1;
	if (!path)
		return 0;
	fd = open(path, (create ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC | O_NOCTTY, 0600);
	/* A check reports the lock file's problems itself (config_check.h). */
	if (fd < 0 && !create && (errno == ENOENT || errno == EACCES))
		return 0;
	if (fd < 0) {
		*ret_why = because(why, sizeof(why), "pkcs11.lock_file: cannot open %s: %s", path, strerror(errno));
		return KR_E_SYSTEM;
	}
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			*ret_why = because(why, sizeof(why), "pkcs11.lock_file: cannot lock %s: %s", path, strerror(errno));
			close(fd);
			return KR_E_SYSTEM;
		}
	}
	*ret_fd = fd;
	return 0;
}

void p11_unlock(int fd)
{
	if (fd < 0)
		return;
	close(fd); /* closing releases the lock */
}

void p11_close(struct p11_token *t)
{
	if (!t)
		return;
	if (t->has_session)
		CALL(t, C_CloseSession, t->session);
	module_put(t->m, t->owner);
	free(t->mechanisms);
	free(t);
}

bool p11_has_mechanism(struct p11_token *t, CK_MECHANISM_TYPE m)
{
	if (t->n_mechanisms < 0) {
		CK_ULONG n = 0;

		t->n_mechanisms = 0;
		if (CALL(t, C_GetMechanismList, t->slot, NULL, &n) != CKR_OK || n == 0 ||
		    !(t->mechanisms = calloc(n, sizeof(*t->mechanisms))))
			return false;
		if (CALL(t, C_GetMechanismList, t->slot, t->mechanisms, &n) == CKR_OK)
			t->n_mechanisms = (long)n;
	}
	for (long i = 0; i < t->n_mechanisms; i++)
		if (t->mechanisms[i] == m)
			return true;
	return false;
}

int p11_login(struct p11_token *t, const char *pin, size_t pin_len, const char **ret_why)
{
	static char why[128];
	CK_RV rv = CALL(t, C_Login, t->session, CKU_USER, (CK_UTF8CHAR *)pin, pin_len);

	if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN)
		return 0;
	t->last_rv = rv;
	switch (rv) {
	case CKR_PIN_INCORRECT:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
		*ret_why = because(why, sizeof(why), "login failed: wrong PIN (%s)", refusal(rv));
		return KR_E_P11_PIN;
	case CKR_PIN_LOCKED:
		*ret_why = because(why, sizeof(why), "login failed: the user PIN is locked (%s)", refusal(rv));
		return KR_E_P11_PIN;
	default: /* e.g. SoftHSM reading a token file that another process rewrites */
		*ret_why = because(why, sizeof(why), "login failed: the token refused it (%s)", refusal(rv));
		return KR_E_P11_TOKEN;
	}
}

void p11_pin_free(char *pin, size_t len)
{
	if (!pin)
		return;
	explicit_bzero(pin, len);
	free(pin);
}

#define MAX_PIN 256

int p11_read_pin(const char *file, const char *credential, char **ret_pin, size_t *ret_len, const char **ret_why)
{
	static char why[4096 + 128];
	char path[4096], *pin;
	const char *dir;
	size_t len;
	FILE *f;

	if (credential) {
		dir = getenv("CREDENTIALS_DIRECTORY");
		if (!dir || snprintf(path, sizeof(path), "%s/%s", dir, credential) >= (int)sizeof(path)) {
			*ret_why = "pkcs11.pin_credential: $CREDENTIALS_DIRECTORY is not set";
			return KR_E_P11_PIN;
		}
		file = path;
	}
	if (!file) {
		*ret_why = "no PIN configured (pkcs11.pin_file or pkcs11.pin_credential)";
		return KR_E_P11_PIN;
	}
	f = fopen(file, "re");
	if (!f) {
		*ret_why = because(why, sizeof(why), "%s: cannot read %s: %s",
				   credential ? "pkcs11.pin_credential" : "pkcs11.pin_file", file, strerror(errno));
		return KR_E_P11_PIN;
	}
	pin = calloc(1, MAX_PIN + 1);
	if (!pin) {
		fclose(f);
		return KR_E_NOMEM;
	}
	setvbuf(f, NULL, _IONBF, 0); /* no stdio buffer holding a copy */
	len = fread(pin, 1, MAX_PIN + 1, f);
	fclose(f);
	while (len > 0 && (pin[len - 1] == '\n' || pin[len - 1] == '\r'))
		len--;
	if (len == 0 || len > MAX_PIN) {
		p11_pin_free(pin, MAX_PIN + 1);
		*ret_why = "the PIN file is empty or too long";
		return KR_E_P11_PIN;
	}
	*ret_pin = pin;
	*ret_len = len;
	return 0;
}

/* Object primitives. Each maps its CKR_ code to a project error through one table
 * and keeps the code for p11_last_rv. */

static const struct {
	CK_RV rv;
	int err;
	const char *name;
} rv_table[] = {
#define RV(rv, err) { rv, err, #rv }
	RV(CKR_OK, 0),
	RV(CKR_HOST_MEMORY, KR_E_NOMEM),
	RV(CKR_OBJECT_HANDLE_INVALID, KR_E_P11_NOT_FOUND),
	RV(CKR_KEY_HANDLE_INVALID, KR_E_P11_NOT_FOUND),
	RV(CKR_KEY_FUNCTION_NOT_PERMITTED, KR_E_P11_NOT_PERMITTED),
	RV(CKR_ACTION_PROHIBITED, KR_E_P11_NOT_PERMITTED),
	RV(CKR_ATTRIBUTE_READ_ONLY, KR_E_P11_NOT_PERMITTED),
	RV(CKR_KEY_NOT_WRAPPABLE, KR_E_P11_NOT_PERMITTED),
	RV(CKR_ATTRIBUTE_SENSITIVE, KR_E_P11_SENSITIVE),
	RV(CKR_KEY_UNEXTRACTABLE, KR_E_P11_SENSITIVE),
	RV(CKR_MECHANISM_INVALID, KR_E_P11_MECHANISM),
	RV(CKR_MECHANISM_PARAM_INVALID, KR_E_P11_MECHANISM),
	RV(CKR_FUNCTION_NOT_SUPPORTED, KR_E_P11_MECHANISM),
	RV(CKR_KEY_TYPE_INCONSISTENT, KR_E_P11_MECHANISM),
	RV(CKR_CURVE_NOT_SUPPORTED, KR_E_P11_MECHANISM),
	RV(CKR_TEMPLATE_INCONSISTENT, KR_E_P11_TEMPLATE),
	RV(CKR_TEMPLATE_INCOMPLETE, KR_E_P11_TEMPLATE),
	RV(CKR_ATTRIBUTE_VALUE_INVALID, KR_E_P11_TEMPLATE),
	RV(CKR_ATTRIBUTE_TYPE_INVALID, KR_E_P11_TEMPLATE),
	RV(CKR_KEY_SIZE_RANGE, KR_E_P11_TEMPLATE),
	RV(CKR_DOMAIN_PARAMS_INVALID, KR_E_P11_TEMPLATE),
	RV(CKR_ARGUMENTS_BAD, KR_E_P11_TEMPLATE),
	RV(CKR_PIN_INCORRECT, KR_E_P11_PIN),
	RV(CKR_PIN_INVALID, KR_E_P11_PIN),
	RV(CKR_PIN_LEN_RANGE, KR_E_P11_PIN),
	RV(CKR_PIN_LOCKED, KR_E_P11_PIN),
	RV(CKR_PIN_EXPIRED, KR_E_P11_PIN),
	RV(CKR_USER_NOT_LOGGED_IN, KR_E_P11_PIN),
	RV(CKR_USER_PIN_NOT_INITIALIZED, KR_E_P11_PIN),
	RV(CKR_DATA_INVALID, KR_E_P11_DATA),
	RV(CKR_DATA_LEN_RANGE, KR_E_P11_DATA),
	RV(CKR_ENCRYPTED_DATA_INVALID, KR_E_P11_DATA),
	RV(CKR_ENCRYPTED_DATA_LEN_RANGE, KR_E_P11_DATA),
	RV(CKR_SIGNATURE_INVALID, KR_E_P11_SIGNATURE),
	RV(CKR_SIGNATURE_LEN_RANGE, KR_E_P11_SIGNATURE),
	RV(CKR_DEVICE_ERROR, KR_E_P11_DEVICE),
	RV(CKR_DEVICE_MEMORY, KR_E_P11_DEVICE),
	RV(CKR_DEVICE_REMOVED, KR_E_P11_DEVICE),
	RV(CKR_TOKEN_NOT_PRESENT, KR_E_P11_DEVICE),
	RV(CKR_SESSION_CLOSED, KR_E_P11_DEVICE),
	RV(CKR_SESSION_HANDLE_INVALID, KR_E_P11_DEVICE),
	RV(CKR_GENERAL_ERROR, KR_E_P11_FAILED),
	RV(CKR_FUNCTION_FAILED, KR_E_P11_FAILED),
	RV(CKR_BUFFER_TOO_SMALL, KR_E_P11_FAILED),
	RV(CKR_RANDOM_NO_RNG, KR_E_P11_MECHANISM),
	/* Named for the log and --check-config; what they mean for a request is a
	 * failed call. */
	RV(CKR_TOKEN_NOT_RECOGNIZED, KR_E_P11_DEVICE),
	RV(CKR_SLOT_ID_INVALID, KR_E_P11_FAILED),
	RV(CKR_CRYPTOKI_NOT_INITIALIZED, KR_E_P11_FAILED),
	RV(CKR_CRYPTOKI_ALREADY_INITIALIZED, KR_E_P11_FAILED),
	RV(CKR_TOKEN_WRITE_PROTECTED, KR_E_P11_FAILED),
	RV(CKR_SESSION_COUNT, KR_E_P11_FAILED),
	RV(CKR_USER_TYPE_INVALID, KR_E_P11_FAILED),
#undef RV
};

bool p11_device_class(CK_RV rv)
{
	switch (rv) {
	case CKR_DEVICE_ERROR:
	case CKR_DEVICE_REMOVED:
	case CKR_DEVICE_MEMORY:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_GENERAL_ERROR:
	case CKR_FUNCTION_FAILED:
		return true;
	default:
		return false;
	}
}

/* The generic codes a token also gives for a request's own fault (SoftHSM: a
 * wrong GCM tag), which a client can cause at will. */
static bool ambiguous(CK_RV rv)
{
	return rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED;
}

CK_RV p11_device_failure(struct p11_token *t)
{
	CK_TOKEN_INFO ti;
	CK_RV rv = t->device_rv;

	/* A generic code is the device's only if the device then fails to say what
	 * it is, too; else the request is. */
	if (ambiguous(rv)) {
		CK_RV probe = CALL(t, C_GetTokenInfo, t->slot, &ti);

		t->device_rv = p11_device_class(probe) ? probe : CKR_OK;
		if (t->device_rv != CKR_OK)
			t->device_rv = rv;
	}
	return t->device_rv;
}

static int check(struct p11_token *t, CK_RV rv)
{
	if (rv != CKR_OK)
		metrics_ckr(p11_rv_name(rv));
	t->last_rv = rv;
	if (t->device_rv == CKR_OK && p11_device_class(rv))
		t->device_rv = rv;
	for (size_t i = 0; i < sizeof(rv_table) / sizeof(rv_table[0]); i++)
		if (rv_table[i].rv == rv)
			return rv_table[i].err;
	return KR_E_P11_FAILED;
}

int p11_token_info(struct p11_token *t, CK_TOKEN_INFO *ret)
{
	CK_TOKEN_INFO ti;
	int r = check(t, CALL(t, C_GetTokenInfo, t->slot, &ti));

	if (r == 0)
		*ret = ti;
	return r;
}

int p11_module_info(struct p11_token *t, CK_INFO *ret)
{
	CK_INFO info;
	int r = check(t, CALL(t, C_GetInfo, &info));

	if (r == 0)
		*ret = info;
	return r;
}

CK_SLOT_ID p11_slot(const struct p11_token *t)
{
	return t->slot;
}

CK_RV p11_last_rv(const struct p11_token *t)
{
	return t->last_rv;
}

unsigned long p11_writes(const struct p11_token *t)
{
	return t->writes;
}

/* Codes the table does not name, as hex ("CKR_0x00000090"), each formatted once
 * and kept for the process: callers keep a name as static text (a response's
 * Result Message). A module returning more distinct unnamed codes than this
 * within one connection is not worth more memory. */
#define MAX_OTHER_RV 64

const char *p11_rv_name(CK_RV rv)
{
	static struct {
		CK_RV rv;
		char name[32];
	} other[MAX_OTHER_RV];
	static size_t n_other;

	for (size_t i = 0; i < sizeof(rv_table) / sizeof(rv_table[0]); i++)
		if (rv_table[i].rv == rv)
			return rv_table[i].name;
	for (size_t i = 0; i < n_other; i++)
		if (other[i].rv == rv)
			return other[i].name;
	if (n_other == MAX_OTHER_RV)
		return "CKR_(other)";
	other[n_other].rv = rv;
	snprintf(other[n_other].name, sizeof(other[n_other].name), "CKR_0x%08lX", (unsigned long)rv);
	return other[n_other++].name;
}

/* The mechanisms the relay uses, by name, for audit records. */
static const struct {
	CK_MECHANISM_TYPE m;
	const char *name;
} mechanism_table[] = {
#define M(m) { m, #m }
	M(CKM_RSA_PKCS),
	M(CKM_RSA_PKCS_PSS),
	M(CKM_RSA_PKCS_OAEP),
	M(CKM_SHA1_RSA_PKCS),
	M(CKM_SHA224_RSA_PKCS),
	M(CKM_SHA256_RSA_PKCS),
	M(CKM_SHA384_RSA_PKCS),
	M(CKM_SHA512_RSA_PKCS),
	M(CKM_SHA1_RSA_PKCS_PSS),
	M(CKM_SHA224_RSA_PKCS_PSS),
	M(CKM_SHA256_RSA_PKCS_PSS),
	M(CKM_SHA384_RSA_PKCS_PSS),
	M(CKM_SHA512_RSA_PKCS_PSS),
	M(CKM_ECDSA),
	M(CKM_ECDSA_SHA1),
	M(CKM_ECDSA_SHA224),
	M(CKM_ECDSA_SHA256),
	M(CKM_ECDSA_SHA384),
	M(CKM_ECDSA_SHA512),
	M(CKM_EDDSA),
	M(CKM_SHA_1_HMAC),
	M(CKM_SHA224_HMAC),
	M(CKM_SHA256_HMAC),
	M(CKM_SHA384_HMAC),
	M(CKM_SHA512_HMAC),
	M(CKM_AES_ECB),
	M(CKM_AES_CBC),
	M(CKM_AES_CBC_PAD),
	M(CKM_AES_GCM),
#undef M
};

const char *p11_mechanism_name(CK_MECHANISM_TYPE m)
{
	for (size_t i = 0; i < sizeof(mechanism_table) / sizeof(mechanism_table[0]); i++)
		if (mechanism_table[i].m == m)
			return mechanism_table[i].name;
	return "CKM_(other)";
}

static const struct p11_hash hash_table[] = {
	{ GNUTLS_DIG_SHA1, CKM_SHA_1, CKM_SHA1_RSA_PKCS, CKM_SHA1_RSA_PKCS_PSS, CKM_ECDSA_SHA1, CKM_SHA_1_HMAC,
	  CKG_MGF1_SHA1 },
	{ GNUTLS_DIG_SHA224, CKM_SHA224, CKM_SHA224_RSA_PKCS, CKM_SHA224_RSA_PKCS_PSS, CKM_ECDSA_SHA224,
	  CKM_SHA224_HMAC, CKG_MGF1_SHA224 },
	{ GNUTLS_DIG_SHA256, CKM_SHA256, CKM_SHA256_RSA_PKCS, CKM_SHA256_RSA_PKCS_PSS, CKM_ECDSA_SHA256,
	  CKM_SHA256_HMAC, CKG_MGF1_SHA256 },
	{ GNUTLS_DIG_SHA384, CKM_SHA384, CKM_SHA384_RSA_PKCS, CKM_SHA384_RSA_PKCS_PSS, CKM_ECDSA_SHA384,
	  CKM_SHA384_HMAC, CKG_MGF1_SHA384 },
	{ GNUTLS_DIG_SHA512, CKM_SHA512, CKM_SHA512_RSA_PKCS, CKM_SHA512_RSA_PKCS_PSS, CKM_ECDSA_SHA512,
	  CKM_SHA512_HMAC, CKG_MGF1_SHA512 },
};

const struct p11_hash *p11_hash(gnutls_digest_algorithm_t dig)
{
	for (size_t i = 0; i < sizeof(hash_table) / sizeof(hash_table[0]); i++)
		if (hash_table[i].dig == dig)
			return &hash_table[i];
	return NULL;
}

int p11_ecdsa_der(const uint8_t *raw, size_t len, gnutls_datum_t *der)
{
	gnutls_datum_t r = { (uint8_t *)raw, (unsigned)len / 2 }, s = { (uint8_t *)raw + len / 2, (unsigned)len / 2 };

	return gnutls_encode_rs_value(der, &r, &s) < 0 ? KR_E_NOMEM : 0;
}

int p11_find(struct p11_token *t, const CK_ATTRIBUTE *tmpl, size_t n, CK_OBJECT_HANDLE *out, size_t max,
	     size_t *ret_count)
{
	CK_ULONG found = 0;
	int r;

	r = check(t, CALL(t, C_FindObjectsInit, t->session, (CK_ATTRIBUTE *)tmpl, n));
	if (r < 0)
		return r;
	r = check(t, CALL(t, C_FindObjects, t->session, out, max, &found));
	CALL(t, C_FindObjectsFinal, t->session);
	if (r < 0)
		return r;
	*ret_count = found;
	return 0;
}

int p11_find_all(struct p11_token *t, const CK_ATTRIBUTE *tmpl, size_t n, CK_OBJECT_HANDLE **ret,
		 size_t *ret_count)
{
	enum { CHUNK = 256 };
	CK_OBJECT_HANDLE *h = NULL;
	size_t count = 0;
	CK_ULONG found = CHUNK;
	int r = check(t, CALL(t, C_FindObjectsInit, t->session, (CK_ATTRIBUTE *)tmpl, n));

	if (r < 0)
		return r;
	while (r == 0 && found == CHUNK) {
		CK_OBJECT_HANDLE *more = realloc(h, (count + CHUNK) * sizeof(*h));

		if (!more) {
			r = KR_E_NOMEM;
			break;
		}
		h = more;
		r = check(t, CALL(t, C_FindObjects, t->session, h + count, CHUNK, &found));
		if (r == 0)
			count += found;
	}
	CALL(t, C_FindObjectsFinal, t->session);
	if (r < 0) {
		free(h);
		return r;
	}
	*ret = h;
	*ret_count = count;
	return 0;
}

int p11_get_attrs(struct p11_token *t, CK_OBJECT_HANDLE h, CK_ATTRIBUTE *tmpl, size_t n)
{
	return check(t, CALL(t, C_GetAttributeValue, t->session, h, tmpl, n));
}

int p11_get_attr_alloc(struct p11_token *t, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type, uint8_t **ret,
		       size_t *ret_len)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	int r = p11_get_attrs(t, h, &a, 1);

	if (r < 0)
		return r;
	if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return check(t, CKR_ATTRIBUTE_TYPE_INVALID);
	a.pValue = malloc(a.ulValueLen ? a.ulValueLen : 1);
	if (!a.pValue)
		return KR_E_NOMEM;
	r = p11_get_attrs(t, h, &a, 1);
	if (r < 0) {
		free(a.pValue);
		return r;
	}
	*ret = a.pValue;
	*ret_len = a.ulValueLen;
	return 0;
}

int p11_set_attrs(struct p11_token *t, CK_OBJECT_HANDLE h, CK_ATTRIBUTE *tmpl, size_t n)
{
	t->writes++;
	return check(t, CALL(t, C_SetAttributeValue, t->session, h, tmpl, n));
}

int p11_create(struct p11_token *t, CK_ATTRIBUTE *tmpl, size_t n, CK_OBJECT_HANDLE *ret)
{
	t->writes++;
	return check(t, CALL(t, C_CreateObject, t->session, tmpl, n, ret));
}

int p11_destroy(struct p11_token *t, CK_OBJECT_HANDLE h)
{
	t->writes++;
	return check(t, CALL(t, C_DestroyObject, t->session, h));
}

int p11_generate_key(struct p11_token *t, CK_MECHANISM *m, CK_ATTRIBUTE *tmpl, size_t n, CK_OBJECT_HANDLE *ret)
{
	t->writes++;
	return check(t, CALL(t, C_GenerateKey, t->session, m, tmpl, n, ret));
}

int p11_generate_key_pair(struct p11_token *t, CK_MECHANISM *m, CK_ATTRIBUTE *pub, size_t n_pub,
			  CK_ATTRIBUTE *priv, size_t n_priv, CK_OBJECT_HANDLE *ret_pub, CK_OBJECT_HANDLE *ret_priv)
{
	t->writes++;
	return check(t, CALL(t, C_GenerateKeyPair, t->session, m, pub, n_pub, priv, n_priv, ret_pub, ret_priv));
}

int p11_sign(struct p11_token *t, CK_MECHANISM *m, CK_OBJECT_HANDLE key, const uint8_t *in, size_t in_len,
	     uint8_t *out, size_t *inout_len)
{
	CK_ULONG len = *inout_len;
	int r = check(t, CALL(t, C_SignInit, t->session, m, key));

	if (r == 0)
		r = check(t, CALL(t, C_Sign, t->session, (CK_BYTE *)in, in_len, out, &len));
	if (r == 0)
		*inout_len = len;
	return r;
}

int p11_digest(struct p11_token *t, CK_MECHANISM *m, const uint8_t *in, size_t in_len, uint8_t *out,
	       size_t *inout_len)
{
	CK_ULONG len = *inout_len;
	int r = check(t, CALL(t, C_DigestInit, t->session, m));

	if (r == 0)
		r = check(t, CALL(t, C_Digest, t->session, (CK_BYTE *)in, in_len, out, &len));
	if (r == 0)
		*inout_len = len;
	return r;
}

int p11_random(struct p11_token *t, uint8_t *out, size_t len)
{
	return check(t, CALL(t, C_GenerateRandom, t->session, out, len));
}

int p11_verify(struct p11_token *t, CK_MECHANISM *m, CK_OBJECT_HANDLE key, const uint8_t *in, size_t in_len,
	       const uint8_t *sig, size_t sig_len)
{
	int r = check(t, CALL(t, C_VerifyInit, t->session, m, key));

	if (r == 0)
		r = check(t, CALL(t, C_Verify, t->session, (CK_BYTE *)in, in_len, (CK_BYTE *)sig, sig_len));
	return r;
}

/* Encryption and decryption in one part (C_Encrypt) or in several (C_EncryptUpdate,
 * C_EncryptFinal). */
enum crypt_step { CRYPT_ONCE, CRYPT_UPDATE, CRYPT_FINAL };

static CK_RV crypt_call(struct p11_token *t, CK_SESSION_HANDLE s, bool encrypt, enum crypt_step step,
			const uint8_t *in, size_t in_len, uint8_t *out, CK_ULONG *len)
{
	CK_BYTE *i = (CK_BYTE *)in;

	switch (step) {
	case CRYPT_ONCE:
		return encrypt ? CALL(t, C_Encrypt, s, i, in_len, out, len) : CALL(t, C_Decrypt, s, i, in_len, out, len);
	case CRYPT_UPDATE:
		return encrypt ? CALL(t, C_EncryptUpdate, s, i, in_len, out, len)
			       : CALL(t, C_DecryptUpdate, s, i, in_len, out, len);
	default:
		return encrypt ? CALL(t, C_EncryptFinal, s, out, len) : CALL(t, C_DecryptFinal, s, out, len);
	}
}

/* One step on session s, into a new buffer of the size the token asks for. */
static int crypt_alloc(struct p11_token *t, CK_SESSION_HANDLE s, bool encrypt, enum crypt_step step,
		       const uint8_t *in, size_t in_len, uint8_t **ret, size_t *ret_len)
{
	CK_ULONG len = 0, size;
	uint8_t *out = NULL;
	int r = check(t, crypt_call(t, s, encrypt, step, in, in_len, NULL, &len));

	size = len ? len : 1;
	if (r == 0 && !(out = malloc(size)))
		r = KR_E_NOMEM;
	if (r == 0)
		r = check(t, crypt_call(t, s, encrypt, step, in, in_len, out, &len));
	if (r < 0) {
		if (out)
			explicit_bzero(out, size);
		free(out);
		return r;
	}
	*ret = out;
	*ret_len = len;
	return 0;
}

int p11_crypt_init(struct p11_token *t, CK_SESSION_HANDLE s, bool encrypt, CK_MECHANISM *m, CK_OBJECT_HANDLE key)
{
	return check(t, encrypt ? CALL(t, C_EncryptInit, s, m, key) : CALL(t, C_DecryptInit, s, m, key));
}

int p11_encrypt(struct p11_token *t, CK_MECHANISM *m, CK_OBJECT_HANDLE key, const uint8_t *in, size_t in_len,
		uint8_t **ret, size_t *ret_len)
{
	int r = p11_crypt_init(t, t->session, true, m, key);

	return r < 0 ? r : crypt_alloc(t, t->session, true, CRYPT_ONCE, in, in_len, ret, ret_len);
}

int p11_decrypt(struct p11_token *t, CK_MECHANISM *m, CK_OBJECT_HANDLE key, const uint8_t *in, size_t in_len,
		uint8_t **ret, size_t *ret_len)
{
	int r = p11_crypt_init(t, t->session, false, m, key);

	return r < 0 ? r : crypt_alloc(t, t->session, false, CRYPT_ONCE, in, in_len, ret, ret_len);
}

int p11_session_open(struct p11_token *t, CK_SESSION_HANDLE *ret)
{
	CK_SESSION_HANDLE s;
	int r = check(t, CALL(t, C_OpenSession, t->slot, CKF_SERIAL_SESSION, NULL, NULL, &s));

	if (r == 0)
		*ret = s;
	return r;
}

void p11_session_close(struct p11_token *t, CK_SESSION_HANDLE s)
{
	CALL(t, C_CloseSession, s);
}

int p11_crypt_update(struct p11_token *t, CK_SESSION_HANDLE s, bool encrypt, const uint8_t *in, size_t in_len,
		     uint8_t **ret, size_t *ret_len)
{
	return crypt_alloc(t, s, encrypt, CRYPT_UPDATE, in, in_len, ret, ret_len);
}

int p11_crypt_final(struct p11_token *t, CK_SESSION_HANDLE s, bool encrypt, uint8_t **ret, size_t *ret_len)
{
	return crypt_alloc(t, s, encrypt, CRYPT_FINAL, NULL, 0, ret, ret_len);
}
