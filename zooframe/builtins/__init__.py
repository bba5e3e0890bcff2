"""The built-in plugins, registered through the same hooks as third-party ones."""

from ..plugins.hookspecs import hookimpl
from ..plugins.reference import SimulatorReference
from ..plugins.reference_file import FileReference
from .estimators.cge import CGE
from .estimators.guided import Guided
from .estimators.rge import RGE
from .estimators.subspace import Subspace
from .loggers.mlflow import MLflow
from .loggers.tensorboard import TensorBoard
from .models.conv import ConvModel
from .models.mlp import MLPModel
from .models.resnet import ResNetModel
from .simulators.burgers import Burgers


@hookimpl
def register_simulators(register):
    register(Burgers)


@hookimpl
def register_references(register):
    register(SimulatorReference)
    register(FileReference)


@hookimpl
def register_estimators(register):
    register(CGE)
    register(RGE)
    register(Guided)
    register(Subspace)


@hookimpl
def register_models(register):
    register(ConvModel)
    register(MLPModel)
    register(ResNetModel)


@hookimpl
def register_loggers(register):
    register(TensorBoard)
    register(MLflow)
