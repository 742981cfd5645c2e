/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "kmip_names.h"

#include <stdlib.h>
#include <string.h>

struct tag_name {
	uint32_t tag;
	const char *name;
};

/* Sorted by tag, as the .def file is, for bsearch. */
static const struct tag_name tags[] = {
#define KMIP_TAG(ident, value, name) { value, name },
#include "kmip_tags.def"
#undef KMIP_TAG
};

struct enum_name {
	uint32_t tag, value;
	const char *name;
};

static const struct enum_name enums[] = {
#define KMIP_ENUM(tag, value, name) { KMIP_TAG_##tag, value, name },
#include "kmip_enums.def"
#undef KMIP_ENUM
};

static int cmp_tag(const void *key, const void *elem)
{
	uint32_t k = *(const uint32_t *)key, t = ((const struct tag_name *)elem)->tag;

	return k < t ? -1 : k > t;
}

const char *kmip_tag_name(uint32_t tag)
{
	const struct tag_name *t = bsearch(&tag, tags, sizeof(tags) / sizeof(tags[0]), sizeof(tags[0]), cmp_tag);

	return t ? t->name : NULL;
}

uint32_t kmip_tag_by_name(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
		if (strlen(tags[i].name) == len && memcmp(tags[i].name, name, len) == 0)
			return tags[i].tag;
	return 0;
}

const char *kmip_enum_name(uint32_t tag, uint32_t value)
{
	for (size_t i = 0; i < sizeof(enums) / sizeof(enums[0]); i++)
		if (enums[i].tag == tag && enums[i].value == value)
			return enums[i].name;
	return NULL;
}

uint32_t kmip_enum_by_name(uint32_t tag, const char *name)
{
	for (size_t i = 0; i < sizeof(enums) / sizeof(enums[0]); i++)
		if (enums[i].tag == tag && strcmp(enums[i].name, name) == 0)
			return enums[i].value;
	return 0;
}

/* Judged by tag alone: the hook sees one item, not its parents, so a tag that holds
 * a secret anywhere is masked everywhere. */
static bool redact_secret(const struct ttlv_item *it)
{
	switch (it->tag) {
	/* Credentials; a Ticket is a bearer credential. */
	case KMIP_TAG_PASSWORD:
	case KMIP_TAG_ONE_TIME_PASSWORD:
	case KMIP_TAG_HASHED_PASSWORD:
	case KMIP_TAG_SERVER_HASHED_PASSWORD:
	case KMIP_TAG_TICKET_VALUE:
	/* Key Value holds Key Material, or a wrapped key's bytes with no Key Material
	 * inside; it is the secret of every Key Block, Secret Data's and Split Key's
	 * too. A public key's Key Value is masked as well. */
	case KMIP_TAG_KEY_VALUE:
	case KMIP_TAG_KEY_MATERIAL:
	/* The private fields of Transparent keys, wherever they appear. P and Q are
	 * an RSA key's primes but a DSA or DH key's public parameters: both are
	 * masked, as the item does not say which key it belongs to. G, J, Y, Modulus,
	 * Public Exponent and Q String are public in every key and stay visible. */
	case KMIP_TAG_KEY:
	case KMIP_TAG_D:
	case KMIP_TAG_X:
	case KMIP_TAG_P:
	case KMIP_TAG_Q:
	case KMIP_TAG_PRIVATE_EXPONENT:
	case KMIP_TAG_PRIME_EXPONENT_P:
	case KMIP_TAG_PRIME_EXPONENT_Q:
	case KMIP_TAG_CRT_COEFFICIENT:
	/* Plaintext (and the data of Sign, MAC, Hash and RNG Retrieve), an Opaque
	 * Object, and PKCS#11 call parameters, which can carry a PIN or key bytes. */
	case KMIP_TAG_DATA:
	case KMIP_TAG_OPAQUE_DATA_VALUE:
	case KMIP_TAG_PKCS11_INPUT_PARAMETERS:
	case KMIP_TAG_PKCS11_OUTPUT_PARAMETERS:
	/* What makes a derived key together with its base key. */
	case KMIP_TAG_DERIVATION_DATA:
	case KMIP_TAG_SALT:
	case KMIP_TAG_INITIALIZATION_VECTOR:
	/* The IV of Key Wrapping Data. Encrypt's and Decrypt's IVs share its tag and
	 * are masked with it: they are public, but worth little in a trace whose
	 * Data is masked, and an item alone does not say which IV it is. */
	case KMIP_TAG_IV_COUNTER_NONCE:
		return true;
	default:
		return false;
	}
}

const struct ttlv_print_ops kmip_print_ops = {
	.tag_name = kmip_tag_name,
	.enum_name = kmip_enum_name,
	.redact = redact_secret,
};
