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

static bool redact_secret(const struct ttlv_item *it)
{
	switch (it->tag) {
	case KMIP_TAG_PASSWORD:
	case KMIP_TAG_ONE_TIME_PASSWORD:
	case KMIP_TAG_HASHED_PASSWORD:
	case KMIP_TAG_KEY_MATERIAL:
	case KMIP_TAG_DATA:
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
