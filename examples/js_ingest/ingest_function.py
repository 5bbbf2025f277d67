"""The function the example's batch runs: indexes one document and reports its word count."""

from __future__ import annotations


def handler(input_data, context):
    words = input_data["text"].split()
    return {
        "doc_id": input_data["id"],
        "title": input_data["title"],
        "words": len(words),
        "distinct_words": len({word.lower().strip(".,") for word in words}),
    }
