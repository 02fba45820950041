"""Why a model was not exported or published."""


class ExportError(Exception):
    """Base class: the release was refused."""


class ContractError(ExportError):
    """The ONNX graph does not match the serving contract."""


class ParityError(ExportError):
    """ONNX Runtime and the framework model disagree."""


class SchemaMismatchError(ExportError):
    """The repository's config speaks another feature schema than the model."""


class PublishError(ExportError):
    """The version directory could not be written."""


class RepublishError(ExportError):
    """The run was already published as a version of the model."""
