/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

/* KMIP message layer: a decoded message encodes back to its own bytes, the attribute
 * containers in its payloads survive the attribute model, and whatever the input, an
 * error response can be sent in the version the relay would choose. */

#include <stdlib.h>
#include <string.h>

#include "kmip.h"
#include "kmip_attr.h"
#include "kmip_names.h"
#include "ttlv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct kmip_version v1_4 = { 1, 4 }, v2_1 = { 2, 1 };

static bool is_v1(struct kmip_version v)
{
	return v.major < 2;
}

static bool supported(struct kmip_version v)
{
	for (size_t i = 0; i < kmip_n_supported_versions; i++)
		if (kmip_version_cmp(kmip_supported_versions[i], v) == 0)
			return true;
	return false;
}

/* The version the relay answers v in, after checking what negotiation promises. */
static struct kmip_version negotiate(struct kmip_version v)
{
	struct kmip_version ret = { -1, -1 };
	bool ok = kmip_negotiate_version(v, &ret);

	if (!supported(ret))
		abort();
	if (ok && (ret.major != v.major || kmip_version_cmp(ret, v) > 0))
		abort();
	if (supported(v) && (!ok || kmip_version_cmp(ret, v) != 0))
		abort();
	return ret;
}

/* The reason sent in version v must be one that v defines, so mapping it again must
 * leave it alone. */
static uint32_t reason_in(enum kmip_reason reason, struct kmip_version v)
{
	uint32_t sent = kmip_reason_for(reason, v);

	if (kmip_reason_for((enum kmip_reason)sent, v) != sent)
		abort();
	return sent;
}

/* The error response must be a well-formed one-item failure that decodes back. */
static void check_error_response(struct kmip_version v, enum kmip_reason reason,
				 const char *text)
{
	const int64_t now = 1700000000;
	struct kmip_message *m = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;
	const struct kmip_batch_item *it;

	if (kmip_encode_message_error(v, now, reason, text, &buf, &len) < 0)
		abort();
	if (kmip_decode_message(buf, len, &ttlv_default_limits, &m) < 0)
		abort();
	it = &m->items[0];
	if (!m->response || m->n_items != 1 || kmip_version_cmp(m->header.version, v) != 0 ||
	    m->header.time_stamp != now || it->error != 0 ||
	    (it->present & KMIP_FIELD(KMIP_I_OPERATION)) ||
	    it->result_status != KMIP_STATUS_OPERATION_FAILED ||
	    it->result_reason != kmip_reason_for(reason, v) ||
	    it->result_message.len != strlen(text) ||
	    memcmp(it->result_message.ptr, text, it->result_message.len) != 0)
		abort();
	kmip_message_free(m);
	ttlv_buf_free(buf, len);
}

static int encode_attrs(const struct ttlv_item *container, const struct kmip_attrs *a,
			struct kmip_version v, uint8_t **ret_buf, size_t *ret_len)
{
	struct ttlv_writer w;

	ttlv_writer_init(&w, TTLV_DEFAULT_MAX_SIZE);
	kmip_attrs_encode(&w, container->tag, a, v);
	return ttlv_writer_finish(&w, ret_buf, ret_len);
}

/* A 1.4 encoding holds exactly the attributes that 1.4 has: the rest (an extension
 * tag, a 2.x-only attribute, a vendor attribute other than "x" and "y") are left
 * out. */
static bool holds_1_4_attributes(const uint8_t *buf, size_t len, const struct kmip_attrs *a)
{
	struct ttlv_item *tree = NULL;
	size_t n = 0;
	bool ok;

	if (ttlv_decode(buf, len, &ttlv_default_limits, &tree) < 0)
		abort();
	for (size_t i = 0; i < a->n; i++)
		n += kmip_attr_in_version(&a->v[i], v1_4);
	ok = ttlv_count_children(tree) == n;
	for (const struct ttlv_item *c = tree->child; c; c = c->next)
		ok &= c->tag == KMIP_TAG_ATTRIBUTE;
	ttlv_free(tree);
	return ok;
}

static bool same_as_item(const uint8_t *buf, size_t len, const struct ttlv_item *it)
{
	/* A structure's length is already a multiple of 8: it has no padding. */
	return len == TTLV_HEADER_LEN + (size_t)it->len &&
	       memcmp(buf, it->value - TTLV_HEADER_LEN, len) == 0;
}

/* A 1.x attribute set that went through 2.x comes back unchanged unless an attribute
 * has an index (2.x has none) or is named "Attribute" (2.x reads an item with that tag
 * as a vendor attribute). */
static bool survives_2x(const struct kmip_attrs *a)
{
	for (size_t i = 0; i < a->n; i++)
		if (a->v[i].has_index || a->v[i].tag == KMIP_TAG_ATTRIBUTE)
			return false;
	return true;
}

static void check_via_2x(const struct ttlv_item *container, const uint8_t *enc2,
			 size_t enc2_len)
{
	struct ttlv_item *tree = NULL;
	struct kmip_attrs back = { 0 };
	uint8_t *enc1 = NULL;
	size_t enc1_len = 0;

	if (ttlv_decode(enc2, enc2_len, &ttlv_default_limits, &tree) < 0)
		abort();
	if (kmip_attrs_decode(tree, v2_1, &back) < 0)
		abort();
	if (encode_attrs(container, &back, v1_4, &enc1, &enc1_len) < 0)
		abort();
	if (!same_as_item(enc1, enc1_len, container))
		abort();
	ttlv_buf_free(enc1, enc1_len);
	kmip_attrs_clear(&back);
	ttlv_free(tree);
}

/* Decoded in the message's version, a container encodes back to its own bytes in
 * that version's family: decoding accepts only what the encoder writes (in 1.x only
 * Attribute structures naming an attribute of that version; in 2.x tagged items and
 * vendor Attribute structures). */
static void check_attrs(const struct ttlv_item *container, struct kmip_version v)
{
	struct kmip_attrs a = { 0 };
	uint8_t *enc1 = NULL, *enc2 = NULL;
	size_t enc1_len = 0, enc2_len = 0;

	if (kmip_attrs_decode(container, v, &a) < 0)
		return;
	if (a.n != ttlv_count_children(container))
		abort();
	if (encode_attrs(container, &a, v2_1, &enc2, &enc2_len) < 0)
		abort();
	if (encode_attrs(container, &a, v1_4, &enc1, &enc1_len) < 0 ||
	    !holds_1_4_attributes(enc1, enc1_len, &a))
		abort();
	if (is_v1(v) ? !same_as_item(enc1, enc1_len, container)
		     : !same_as_item(enc2, enc2_len, container))
		abort();
	if (is_v1(v) && survives_2x(&a))
		check_via_2x(container, enc2, enc2_len);
	ttlv_buf_free(enc1, enc1_len);
	ttlv_buf_free(enc2, enc2_len);
	kmip_attrs_clear(&a);
}

static bool is_attr_container(uint32_t tag)
{
	switch (tag) {
	case KMIP_TAG_TEMPLATE_ATTRIBUTE:
	case KMIP_TAG_COMMON_TEMPLATE_ATTRIBUTE:
	case KMIP_TAG_PRIVATE_KEY_TEMPLATE_ATTRIBUTE:
	case KMIP_TAG_PUBLIC_KEY_TEMPLATE_ATTRIBUTE:
	case KMIP_TAG_ATTRIBUTES:
	case KMIP_TAG_COMMON_ATTRIBUTES:
	case KMIP_TAG_PRIVATE_KEY_ATTRIBUTES:
	case KMIP_TAG_PUBLIC_KEY_ATTRIBUTES:
		return true;
	default:
		return false;
	}
}

static void check_items(const struct kmip_message *m, struct kmip_version answer)
{
	for (size_t i = 0; i < m->n_items; i++) {
		const struct kmip_batch_item *it = &m->items[i];
		const struct ttlv_item *payload = it->payload.first;

		if (it->present & KMIP_FIELD(KMIP_I_OPERATION))
			(void)kmip_operation_defined(it->operation, m->header.version);
		if (it->present & KMIP_FIELD(KMIP_I_RESULT_REASON))
			(void)reason_in((enum kmip_reason)it->result_reason, answer);
		if (it->error) {
			(void)reason_in(kmip_reason_for_error(it->error), answer);
			continue;
		}
		if (!(it->present & KMIP_FIELD(KMIP_I_PAYLOAD)) || !payload)
			continue;
		check_attrs(payload, m->header.version);
		for (const struct ttlv_item *c = payload->child; c; c = c->next)
			if (c->type == TTLV_STRUCTURE && is_attr_container(c->tag))
				check_attrs(c, m->header.version);
	}
}

/* Fields that the model does not keep: items that failed to decode, and unknown
 * fields skipped in a message of a newer minor version. */
static bool fully_modelled(const struct kmip_message *m)
{
	struct kmip_version nv;

	for (size_t i = 0; i < m->n_items; i++)
		if (m->items[i].error)
			return false;
	return !(kmip_negotiate_version(m->header.version, &nv) &&
		 kmip_version_cmp(m->header.version, nv) > 0);
}

static void check_reencode(const uint8_t *data, size_t size, const struct kmip_message *m)
{
	struct kmip_message *again = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;

	/* What the model drops only makes the message shorter. */
	if (kmip_encode_message(m, size, &buf, &len) < 0 || len > size)
		abort();
	if ((fully_modelled(m) || len == size) && (len != size || memcmp(buf, data, size) != 0))
		abort();
	if (kmip_decode_message(buf, len, &ttlv_default_limits, &again) < 0)
		abort();
	if (again->response != m->response || again->n_items != m->n_items ||
	    again->header.present != m->header.present)
		abort();
	kmip_message_free(again);
	ttlv_buf_free(buf, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kmip_version peeked = { 1, 0 }, answer;
	struct kmip_message *m = NULL;
	int r;

	(void)kmip_peek_version(data, size, &peeked);
	answer = negotiate(peeked);

	r = kmip_decode_message(data, size, &ttlv_default_limits, &m);
	if (r < 0) {
		check_error_response(peeked, kmip_reason_for_error(r), kr_strerror(r));
		check_error_response(answer, kmip_reason_for_error(r), kr_strerror(r));
		(void)reason_in(kmip_reason_for_error(r), answer);
		return 0;
	}
	if (kmip_version_cmp(m->header.version, peeked) != 0)
		abort();
	check_error_response(peeked, KMIP_REASON_INVALID_MESSAGE, "");
	check_reencode(data, size, m);
	check_items(m, answer);
	kmip_message_free(m);
	return 0;
}
