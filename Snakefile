# Entry point from the repository root: `snakemake --cores all`.
include: "workflow/Snakefile"


rule default:
    input:
        rules.all.input,
    default_target: True
