"""Does the seed architecture fit the data? (input shape and number of classes)"""

from __future__ import annotations

from growsearch.spec import Spec

__all__ = ["model_data_problems"]


def model_data_problems(spec: Spec, input_shape: tuple[int, ...], num_classes: int) -> list[str]:
    problems = []
    if tuple(spec.input_shape) != tuple(input_shape):
        problems.append(
            f"model.input_shape is {list(spec.input_shape)} but the data has samples of shape "
            f"{list(input_shape)}; set model.input_shape: {list(input_shape)}"
        )
    if spec.num_classes is not None and spec.num_classes != num_classes:
        last = spec.layers[-1].name
        problems.append(
            f"the output layer '{last}' has {spec.num_classes} outputs but the data has "
            f"{num_classes} classes; set its out: {num_classes}"
        )
    return problems
