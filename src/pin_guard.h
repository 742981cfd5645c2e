/* SPDX-License-Identifier: BSD-3-Clause */
/* Keeps the token's user PIN from being locked by the relay. Before C_Login: a
 * token whose flags say its user PIN is locked, or that one more wrong PIN locks
 * it, is not tried; a PIN from a client is not tried while the token's budget of
 * failed client PINs is spent (pkcs11.pin_failures within
 * pkcs11.pin_failure_window); a configured PIN that the token rejected is not
 * tried again until it changes. The failures and the rejected PINs (a salted
 * PBKDF2 hash, never the PIN) live in a state file beside pkcs11.lock_file
 * (CFG_PIN_STATE_SUFFIX appended), read and rewritten under its lock, so every
 * relay process shares them. Refusals are logged here, with the token's label. */
#ifndef KR_PIN_GUARD_H
#define KR_PIN_GUARD_H

#include <p11-kit/pkcs11.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "cfg.h"

struct pin_guard;

/* Whether pin may be tried on the token that ti describes, decided while the
 * caller holds pkcs11.lock_file: 0 and a guard for pin_guard_after, else
 * KR_E_P11_PIN (or KR_E_SYSTEM or KR_E_NOMEM for a state file that cannot be read)
 * with *ret_why. client_pin: the PIN came from the client, else from the config. */
int pin_guard_before(const struct cfg *c, const CK_TOKEN_INFO *ti, bool client_pin, const char *pin, size_t pin_len,
		     time_t now, struct pin_guard **ret, const char **ret_why) KR_WUR;
/* Records what C_Login answered to pin (rv), still under the lock, rewriting the
 * state file if that changed it, and frees g (NULL: nothing to do). */
void pin_guard_after(struct pin_guard *g, CK_RV rv, const char *pin, size_t pin_len, time_t now);

#endif
