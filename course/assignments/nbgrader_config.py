"""nbgrader's configuration for the course's assignments (this folder is the nbgrader course directory).

    cd course/assignments
    nbgrader generate_assignment 01_instance_discrimination --force    # source/ -> release/
    nbgrader autograde 01_instance_discrimination                      # submitted/ -> autograded/
    nbgrader generate_feedback 01_instance_discrimination              # autograded/ -> feedback/

See course/README.md ("Assignments") for the whole release / collect / grade cycle.
"""

from pathlib import Path

c = get_config()  # noqa: F821 (nbgrader's config loader provides get_config)

c.CourseDirectory.root = str(Path(__file__).resolve().parent)
c.CourseDirectory.course_id = "ssl_minimal"

# The training cells run for seconds; the notebook as a whole well under a minute. nbgrader's default
# per-cell timeout (30 s) would fail a busy laptop, so allow 5 minutes per cell.
c.ExecutePreprocessor.timeout = 300
c.Execute.timeout = 300

# What a student sees in place of a solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
