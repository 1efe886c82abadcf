"""The data types ``run.log`` takes besides numbers and strings.

Files (uploaded through the protocol's ``/files`` route): :class:`Image`, :class:`Audio`, :class:`Video`,
:class:`Text`, :class:`Artifact` and :class:`File`. Data (sent through ``/ingest/data``):
:class:`Histogram`, :class:`Table` and :class:`Graph`. numpy and pillow are imported when a value needs
them, never by ``import mlop``.
"""

from __future__ import annotations

from mlop._data._artifact import Artifact, File
from mlop._data._audio import Audio
from mlop._data._graph import Graph
from mlop._data._histogram import Histogram
from mlop._data._image import Image
from mlop._data._table import Table
from mlop._data._text import Text
from mlop._data._video import Video

__all__ = ["Artifact", "Audio", "File", "Graph", "Histogram", "Image", "Table", "Text", "Video"]
