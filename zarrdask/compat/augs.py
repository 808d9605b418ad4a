"""zarrdataset's ``ToDtype`` transform."""

from __future__ import annotations

import numpy as np

__all__ = ["ToDtype"]


class ToDtype:
    """Converted a numpy NDArray to the specified data type.

    Parameters
    ----------
    dtype : numpy.dtype
        The data type to cast the input array.

    Examples
    --------
    >>> import numpy as np
    >>> ToDtype(np.float32)(np.arange(3, dtype=np.uint8)).dtype
    dtype('float32')
    """

    def __init__(self, dtype: np.dtype) -> None:
        self._dtype = dtype

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Casts the type of `image` to the data type specified with `dtype`.

        Parameters
        ----------
        image : numpy.ndarray
            A numpy NDArray.

        Returns
        -------
        numpy.ndarray
            A new array with the values of ``image`` in ``dtype``.
        """
        return np.asarray(image).astype(self._dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dtype={self._dtype})"
