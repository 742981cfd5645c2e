/* SPDX-License-Identifier: BSD-3-Clause */
/* One attribute model for both wire encodings: KMIP 1.x Attribute structures (Attribute
 * Name / Attribute Index / Attribute Value, as in Template-Attribute) and KMIP 2.x
 * Attributes (each attribute an item under its own tag; vendor attributes as
 * Attribute structures). */
#ifndef KR_KMIP_ATTR_H
#define KR_KMIP_ATTR_H

#include "kmip.h"

struct kmip_attr {
	uint32_t tag;            /* a standard attribute's tag, 0 for a vendor attribute */
	struct kmip_text vendor; /* vendor attribute: "x" for a 1.x "x-..." custom attribute */
	struct kmip_text name;   /* vendor attribute: the name after the vendor prefix */
	bool has_index;          /* 1.x Attribute Index; 2.x has none */
	int32_t index;
	const struct ttlv_item *value; /* borrowed; its tag belongs to the encoding */
};

struct kmip_attrs {
	struct kmip_attr *v; /* owned array; the attributes borrow from the decoded tree */
	size_t n;
};

/* Decodes the attributes directly under container, in the encoding of version v. In
 * 1.x, container's children other than Attribute structures are an error, and so is
 * a name that v has no attribute of (KR_E_KMIP_UNKNOWN_ATTRIBUTE). */
int kmip_attrs_decode(const struct ttlv_item *container, struct kmip_version v,
		      struct kmip_attrs *ret) KR_WUR;
void kmip_attrs_clear(struct kmip_attrs *a);

/* Whether version v has an encoding for a: in 1.x, the attributes of that version's
 * specification and custom attributes ("x-..." and "y-..."); in 2.x, every one. */
bool kmip_attr_in_version(const struct kmip_attr *a, struct kmip_version v);

/* Writes the attributes in the encoding of version v, inside a structure tagged
 * container_tag, or with no enclosing structure if container_tag is 0. An attribute
 * that v has no encoding for is left out, so that a 1.x client meets none its
 * version lacks. */
void kmip_attrs_encode(struct ttlv_writer *w, uint32_t container_tag, const struct kmip_attrs *a,
		       struct kmip_version v);

#endif
