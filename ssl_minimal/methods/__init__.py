"""One file per method, in the order of the course. `METHODS` maps the lower-case name to the class."""

from .instdisc import InstDisc
from .invaspread import InvaSpread

METHODS = {
    "instdisc": InstDisc,
    "invaspread": InvaSpread,
}
