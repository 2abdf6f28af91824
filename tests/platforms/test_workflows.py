"""Loading and validating applications and workflows."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanflow_agents.workflows import (
    ExecutorNode,
    ServiceNode,
    WorkflowError,
    load_application,
    load_workflow,
    parse_quantity,
)

APP = """
name: digits
team: vision
workflows:
  - name: retrain
    nodes:
      - {name: prepare, entry_point: prepare.py}
      - {name: fit, entry_point: "digits.training:fit", parameters: {C: 0.5},
         resources: {cpu: 500m, memory: 1Gi}}
      - {name: report, entry_point: digits.report}
      - {name: evaluate, entry_point: evaluate.py}
    edges: [[prepare, fit], [fit, evaluate], [prepare, report]]
  - name: serve
    kind: online
    nodes:
      - {name: model, model_uri: "models:/digits@production", replicas: 2, latency_p95_ms: 50}
agents:
  - {name: tracker, agent: tracker}
"""


def test_an_application_loads_from_text_file_and_dict(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(APP)

    from_text, from_file = load_application(APP), load_application(path)
    from_dict = load_application(
        from_text.model_dump(exclude={"workflows": {"__all__": {"base_dir"}}})
    )

    retrain = from_file.workflow("retrain")
    assert retrain.base_dir == tmp_path.resolve()
    assert retrain.topological_order() == ("prepare", "fit", "report", "evaluate")
    assert retrain.dependants("prepare") == {"fit", "evaluate", "report"}
    assert isinstance(retrain.node("fit"), ExecutorNode)
    assert retrain.node("fit").resources.cpu_cores == 0.5
    assert retrain.node("fit").resources.memory_bytes == 2**30
    service = from_file.workflow("serve").node("model")
    assert isinstance(service, ServiceNode)
    assert service.replicas == 2
    assert from_text.workflows[0].nodes == from_dict.workflows[0].nodes == retrain.nodes


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        (
            "nodes: [{name: a, entry_point: a.py}]\nedges: [[a, b]]",
            "workflow 'w': edge ('a', 'b') names unknown node 'b'",
        ),
        (
            "nodes: [{name: a, entry_point: a.py}, {name: b, entry_point: b.py}]\n"
            "edges: [[a, b], [b, a]]",
            "workflow 'w': dependency cycle among ['a', 'b', 'a']",
        ),
        (
            "nodes: [{name: a, entry_point: a.py}, {name: m, model_uri: 'models:/x/1'}]",
            "workflow 'w': service node(s) ['m'] in a batch workflow",
        ),
        (
            "nodes: [{name: a, parameters: {x: 1}}]",
            "workflow 'w', node 'a', field 'entry_point': Field required",
        ),
        (
            "nodes: [{name: a, entry_point: a.py, resources: {memory: 1GB}}]",
            "workflow 'w', node 'a', field 'resources.memory': '1GB' is not a resource quantity",
        ),
        (
            "nodes: [{name: a, entry_point: 'not a module'}]",
            "workflow 'w', node 'a', field 'entry_point': 'not a module' is neither",
        ),
        (
            "nodes: [{name: a, entry_point: a.py}, {name: a, entry_point: b.py}]",
            "workflow 'w': duplicate node name(s) ['a']",
        ),
    ],
)
def test_errors_name_the_workflow_node_and_field(definition: str, expected: str) -> None:
    with pytest.raises(WorkflowError) as info:
        load_workflow("name: w\n" + definition)
    assert expected in str(info.value)


def test_errors_inside_an_application_name_it_too() -> None:
    broken = APP.replace("cpu: 500m", "cpu: 5 cores")
    with pytest.raises(WorkflowError) as info:
        load_application(broken)
    assert info.value.problems == [
        "application 'digits', workflow 'retrain', node 'fit', field 'resources.cpu': "
        "'5 cores' is not a resource quantity (examples: '500m', '2', '512Mi', '1Gi')"
    ]


def test_quantities_follow_kubernetes() -> None:
    assert parse_quantity("500m") == parse_quantity("0.5")
    assert parse_quantity("1Ki") == 1024
    assert parse_quantity("2G") == 2 * 10**9
    for bad in ("1GB", "-1", "m", "1.2.3", ""):
        with pytest.raises(ValueError, match="not a resource quantity"):
            parse_quantity(bad)
