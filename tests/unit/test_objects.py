from common.objects import decode_head, decode_list_page, phase_of, without_managed_fields


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


def test_without_managed_fields_drops_only_them_and_keeps_the_order() -> None:
    obj = (
        b'{"kind":"Job","metadata":{"name":"a","managedFields":[{"manager":"kubectl"}],'
        b'"resourceVersion":"7"},"spec":{"minAvailable":1}}'
    )
    assert without_managed_fields(obj) == (
        b'{"kind":"Job","metadata":{"name":"a","resourceVersion":"7"},"spec":{"minAvailable":1}}'
    )
    plain = b'{"kind":"Job","metadata":{"name":"a"}}'
    assert without_managed_fields(plain) is plain
    # The word elsewhere (a label, an annotation) is not metadata.managedFields.
    labelled = b'{"metadata":{"labels":{"x":"managedFields"}}}'
    assert without_managed_fields(labelled) == labelled
