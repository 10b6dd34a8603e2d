from common.objects import decode_head, decode_list_page, phase_of


def test_list_items_keep_their_exact_bytes() -> None:
    raw = (
        b'{"metadata":{"resourceVersion":"9","continue":"tok"},'
        b'"items":[{"metadata":{"name":"a","resourceVersion":"7"},"spec":{"x": 1}}]}'
    )
    page = decode_list_page(raw)
    assert page.metadata.next_page == "tok"
    assert page.items is not None
    assert (
        bytes(page.items[0]) == b'{"metadata":{"name":"a","resourceVersion":"7"},"spec":{"x": 1}}'
    )
    assert decode_head(bytes(page.items[0])).metadata.resourceVersion == "7"


def test_phase_of_each_volcano_kind() -> None:
    assert phase_of(b'{"status":{"state":{"phase":"Running"}}}') == "Running"  # Job
    assert phase_of(b'{"status":{"phase":"Inqueue"}}') == "Inqueue"  # PodGroup, Pod
    assert phase_of(b'{"status":{"state":"Open"}}') == "Open"  # Queue
    assert phase_of(b'{"spec":{}}') == ""
