# vaestudy: what p(x|z) should a VAE decoder be?
# config.yaml -> schema check -> grid of runs -> prepare data, feature network -> one job per
# configuration (train, evaluate, sample quality of each of its seeds)
# -> collect tables -> figures and report texts (snakemake --report results/report.html).
import copy
import sys

from snakemake.common.configfile import load_configfile
from snakemake.utils import min_version, validate

from vaestudy.study import GRID, SCHEMA, check_schema, command_line_grid
from vaestudy.errors import UserError

min_version("8.20")


configfile: "config.yaml"

# a --configfile or --config that names `arenas` gives the whole grid: Snakemake merges mappings key by
# key, so a study file of the binary arena alone also ran config.yaml's continuous arena
grid = command_line_grid(
    [load_configfile(path) for path in workflow.config_settings.configfiles]
    + [dict(workflow.config_settings.config)]
)
if grid is not None:
    config[GRID] = copy.deepcopy(grid)

try:  # one line that names the key and the problem, before any job starts
    config.update(check_schema(config, SCHEMA))  # with 1e-3 and --config text as numbers
except UserError as error:
    sys.stderr.write(f"vaestudy: config error: {error}\n")
    sys.exit(2)
validate(config, str(SCHEMA), set_default=True)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/quality.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


# seconds of work each: run where snakemake runs, never submitted to a cluster
localrules:
    all,
    prepare_data,
    collect,
    figures,
    report_text,
    reference,


rule all:
    input:
        rules.collect.output,
        rules.figures.output,
        rules.report_text.output,
        # every model's outputs too, so that deleting a model's folder rebuilds it (its configuration's
        # job: the other seeds resume from their last checkpoint and are only evaluated again)
        rules.collect.input.metrics,
        rules.collect.input.quality,
    default_target: True
