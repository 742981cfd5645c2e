/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "kmip_attr.h"

#include <stdlib.h>
#include <string.h>

#define VENDOR_SEPARATOR '-'

void kmip_attrs_clear(struct kmip_attrs *a)
{
	free(a->v);
	*a = (struct kmip_attrs){ 0 };
}

static bool is_v1(struct kmip_version v)
{
	return v.major < 2;
}

/* The attributes of KMIP 1.x (section 3 of each version's specification), with the
 * minor version that brought each. Being KMIP_TAG_ constants, all have a name. */
static const struct {
	uint32_t tag;
	int32_t since_minor;
} v1_attributes[] = {
	{ KMIP_TAG_UNIQUE_IDENTIFIER, 0 },
	{ KMIP_TAG_NAME, 0 },
	{ KMIP_TAG_OBJECT_TYPE, 0 },
	{ KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, 0 },
	{ KMIP_TAG_CRYPTOGRAPHIC_LENGTH, 0 },
	{ KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS, 0 },
	{ KMIP_TAG_CRYPTOGRAPHIC_DOMAIN_PARAMETERS, 0 },
	{ KMIP_TAG_CERTIFICATE_TYPE, 0 },
	{ KMIP_TAG_CERTIFICATE_IDENTIFIER, 0 },
	{ KMIP_TAG_CERTIFICATE_SUBJECT, 0 },
	{ KMIP_TAG_CERTIFICATE_ISSUER, 0 },
	{ KMIP_TAG_DIGEST, 0 },
	{ KMIP_TAG_OPERATION_POLICY_NAME, 0 },
	{ KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, 0 },
	{ KMIP_TAG_LEASE_TIME, 0 },
	{ KMIP_TAG_USAGE_LIMITS, 0 },
	{ KMIP_TAG_STATE, 0 },
	{ KMIP_TAG_INITIAL_DATE, 0 },
	{ KMIP_TAG_ACTIVATION_DATE, 0 },
	{ KMIP_TAG_PROCESS_START_DATE, 0 },
	{ KMIP_TAG_PROTECT_STOP_DATE, 0 },
	{ KMIP_TAG_DEACTIVATION_DATE, 0 },
	{ KMIP_TAG_DESTROY_DATE, 0 },
	{ KMIP_TAG_COMPROMISE_OCCURRENCE_DATE, 0 },
	{ KMIP_TAG_COMPROMISE_DATE, 0 },
	{ KMIP_TAG_REVOCATION_REASON, 0 },
	{ KMIP_TAG_ARCHIVE_DATE, 0 },
	{ KMIP_TAG_OBJECT_GROUP, 0 },
	{ KMIP_TAG_LINK, 0 },
	{ KMIP_TAG_APPLICATION_SPECIFIC_INFORMATION, 0 },
	{ KMIP_TAG_CONTACT_INFORMATION, 0 },
	{ KMIP_TAG_LAST_CHANGE_DATE, 0 },
	{ KMIP_TAG_CERTIFICATE_LENGTH, 1 },
	{ KMIP_TAG_X_509_CERTIFICATE_IDENTIFIER, 1 },
	{ KMIP_TAG_X_509_CERTIFICATE_SUBJECT, 1 },
	{ KMIP_TAG_X_509_CERTIFICATE_ISSUER, 1 },
	{ KMIP_TAG_DIGITAL_SIGNATURE_ALGORITHM, 1 },
	{ KMIP_TAG_FRESH, 1 },
	{ KMIP_TAG_ALTERNATIVE_NAME, 2 },
	{ KMIP_TAG_KEY_VALUE_PRESENT, 2 },
	{ KMIP_TAG_KEY_VALUE_LOCATION, 2 },
	{ KMIP_TAG_ORIGINAL_CREATION_DATE, 2 },
	{ KMIP_TAG_RANDOM_NUMBER_GENERATOR, 3 },
	{ KMIP_TAG_PKCS12_FRIENDLY_NAME, 4 },
	{ KMIP_TAG_DESCRIPTION, 4 },
	{ KMIP_TAG_COMMENT, 4 },
	{ KMIP_TAG_SENSITIVE, 4 },
	{ KMIP_TAG_ALWAYS_SENSITIVE, 4 },
	{ KMIP_TAG_EXTRACTABLE, 4 },
	{ KMIP_TAG_NEVER_EXTRACTABLE, 4 },
};

bool kmip_attr_in_version(const struct kmip_attr *a, struct kmip_version v)
{
	if (!is_v1(v))
		return true;
	if (!a->tag) /* 1.x names a custom attribute "x-..." or "y-...", as decoded */
		return a->vendor.len == 1 && (a->vendor.ptr[0] == 'x' || a->vendor.ptr[0] == 'y');
	for (size_t i = 0; i < sizeof(v1_attributes) / sizeof(v1_attributes[0]); i++)
		if (v1_attributes[i].tag == a->tag)
			return v.minor >= v1_attributes[i].since_minor;
	return false;
}

/* An Attribute structure: 1.x (Name, optional Index, Value) or 2.x vendor attribute
 * (Vendor Identification, Name, Value). */
static int decode_attribute(const struct ttlv_item *it, struct kmip_version v, struct kmip_attr *ret)
{
	const struct ttlv_item *c = it->child;
	struct kmip_attr a = { 0 };
	bool v1 = is_v1(v);

	if (it->type != TTLV_STRUCTURE)
		return KR_E_KMIP_FIELD_TYPE;
	if (!v1) {
		if (!c || c->tag != KMIP_TAG_VENDOR_IDENTIFICATION)
			return KR_E_KMIP_MISSING;
		if (c->type != TTLV_TEXT_STRING)
			return KR_E_KMIP_FIELD_TYPE;
		a.vendor = (struct kmip_text){ (const char *)c->value, c->len };
		c = c->next;
	}
	if (!c || c->tag != KMIP_TAG_ATTRIBUTE_NAME)
		return KR_E_KMIP_MISSING;
	if (c->type != TTLV_TEXT_STRING)
		return KR_E_KMIP_FIELD_TYPE;
	a.name = (struct kmip_text){ (const char *)c->value, c->len };
	c = c->next;
	if (v1 && c && c->tag == KMIP_TAG_ATTRIBUTE_INDEX) {
		if (c->type != TTLV_INTEGER)
			return KR_E_KMIP_FIELD_TYPE;
		a.has_index = true;
		a.index = ttlv_int(c);
		c = c->next;
	}
	if (!c || c->tag != KMIP_TAG_ATTRIBUTE_VALUE)
		return KR_E_KMIP_MISSING;
	a.value = c;
	if (c->next)
		return KR_E_KMIP_UNKNOWN_FIELD;
	if (v1) {
		/* "x-name" and "y-name" are custom attributes, anything else must be the
		 * name of an attribute of version v: what a response in v would leave
		 * out is not taken either. */
		const char *sep = memchr(a.name.ptr, VENDOR_SEPARATOR, a.name.len);

		a.tag = kmip_tag_by_name(a.name.ptr, a.name.len);
		if (!a.tag && sep && sep - a.name.ptr == 1 && (a.name.ptr[0] == 'x' || a.name.ptr[0] == 'y')) {
			a.vendor = (struct kmip_text){ a.name.ptr, 1 };
			a.name = (struct kmip_text){ sep + 1, a.name.len - 2 };
		} else if (!a.tag || !kmip_attr_in_version(&a, v)) {
			return KR_E_KMIP_UNKNOWN_ATTRIBUTE;
		}
	}
	if (a.tag)
		a.name = (struct kmip_text){ 0 };
	*ret = a;
	return 0;
}

int kmip_attrs_decode(const struct ttlv_item *container, struct kmip_version v,
		      struct kmip_attrs *ret)
{
	size_t n = ttlv_count_children(container), i = 0;
	struct kmip_attr *attrs;
	int r = 0;

	if (container->type != TTLV_STRUCTURE)
		return KR_E_KMIP_FIELD_TYPE;
	attrs = calloc(n ? n : 1, sizeof(*attrs));
	if (!attrs)
		return KR_E_NOMEM;
	for (const struct ttlv_item *c = container->child; c; c = c->next, i++) {
		if (c->tag == KMIP_TAG_ATTRIBUTE) {
			r = decode_attribute(c, v, &attrs[i]);
			if (r < 0)
				break;
		} else if (is_v1(v)) {
			/* e.g. a Template-Attribute's template Name: templates are not supported */
			r = KR_E_KMIP_UNKNOWN_FIELD;
			break;
		} else if (c->tag == 0) {
			/* no attribute's tag: the model reserves 0 for vendor attributes */
			r = KR_E_KMIP_UNKNOWN_FIELD;
			break;
		} else {
			attrs[i] = (struct kmip_attr){ .tag = c->tag, .value = c };
		}
	}
	if (r < 0) {
		free(attrs);
		return r;
	}
	*ret = (struct kmip_attrs){ attrs, n };
	return 0;
}

static void encode_v1_name(struct ttlv_writer *w, const struct kmip_attr *a)
{
	const char *std = a->tag ? kmip_tag_name(a->tag) : NULL;
	char *full;
	size_t len;

	if (std) {
		ttlv_put_text(w, KMIP_TAG_ATTRIBUTE_NAME, std, strlen(std));
		return;
	}
	len = a->vendor.len + 1 + a->name.len;
	full = malloc(len);
	if (!full) {
		w->err = w->err ? w->err : KR_E_NOMEM;
		return;
	}
	memcpy(full, a->vendor.ptr, a->vendor.len);
	full[a->vendor.len] = VENDOR_SEPARATOR;
	memcpy(full + a->vendor.len + 1, a->name.ptr, a->name.len);
	ttlv_put_text(w, KMIP_TAG_ATTRIBUTE_NAME, full, len);
	free(full);
}

void kmip_attrs_encode(struct ttlv_writer *w, uint32_t container_tag, const struct kmip_attrs *a,
		       struct kmip_version v)
{
	if (container_tag)
		ttlv_begin(w, container_tag);
	for (size_t i = 0; i < a->n; i++) {
		const struct kmip_attr *at = &a->v[i];

		if (!kmip_attr_in_version(at, v))
			continue;
		if (!is_v1(v) && at->tag) {
			ttlv_put_item(w, at->tag, at->value);
			continue;
		}
		ttlv_begin(w, KMIP_TAG_ATTRIBUTE);
		if (is_v1(v)) {
			encode_v1_name(w, at);
			if (at->has_index)
				ttlv_put_int(w, KMIP_TAG_ATTRIBUTE_INDEX, at->index);
		} else {
			ttlv_put_text(w, KMIP_TAG_VENDOR_IDENTIFICATION, at->vendor.ptr, at->vendor.len);
			ttlv_put_text(w, KMIP_TAG_ATTRIBUTE_NAME, at->name.ptr, at->name.len);
		}
		ttlv_put_item(w, KMIP_TAG_ATTRIBUTE_VALUE, at->value);
		ttlv_end(w);
	}
	if (container_tag)
		ttlv_end(w);
}
