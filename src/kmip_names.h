/* SPDX-License-Identifier: BSD-3-Clause */
/* KMIP tag and enumeration names, from the specification tables in kmip_tags.def and
 * kmip_enums.def. */
#ifndef KR_KMIP_NAMES_H
#define KR_KMIP_NAMES_H

#include <stddef.h>
#include <stdint.h>

#include "ttlv_print.h"

enum kmip_tag {
#define KMIP_TAG(ident, value, name) KMIP_TAG_##ident = value,
#include "kmip_tags.def"
#undef KMIP_TAG
};

/* Name of a tag as the specification spells it, or NULL if unknown. */
const char *kmip_tag_name(uint32_t tag);
/* Tag for a specification name (a KMIP 1.x Attribute Name), or 0 if unknown. */
uint32_t kmip_tag_by_name(const char *name, size_t len);
/* Name of an enumeration value of the given tag, or NULL if unknown. */
const char *kmip_enum_name(uint32_t tag, uint32_t value);
/* The enumeration value of the given tag with this name, or 0 if unknown. */
uint32_t kmip_enum_by_name(uint32_t tag, const char *name);

/* Printing with KMIP names, masking every item that can hold a secret: credentials,
 * Key Value and key material, Data, Opaque Data Value, key derivation inputs, IVs. */
extern const struct ttlv_print_ops kmip_print_ops;

#endif
