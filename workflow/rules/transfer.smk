# The transfer target: random configurations trained at every resolution of the ladder (the
# `transfer` runs, through run_stage and promote_configs like successive halving's rungs),
# and per data set the rank correlation of their validation errors with those at the
# largest resolution, beside the configurations the study's halving and Hyperband rungs
# promoted (src/iishpo/results/transfer.py). Not part of `rule all`:
#   snakemake --cores all transfer --config study=claim


def transfer_inputs(dataset, path_of):
    """``path_of`` every stage of the runs the analysis of ``dataset`` reads."""
    return [str(path_of(plan.key)) for run in transfer_sources(STUDY, dataset) for plan in stages(STUDY, run)]


def transfer_promotions(dataset):
    """The promotions between the stages of the runs the analysis of ``dataset`` reads."""
    return [
        str(LAYOUT.handoff(plan.key)) for run in transfer_sources(STUDY, dataset) for plan in stages(STUDY, run)[:-1]
    ]


rule analyze_transfer:
    input:
        trials=lambda wc: transfer_inputs(wc.dataset, LAYOUT.trials),
        stages=lambda wc: transfer_inputs(wc.dataset, LAYOUT.stage_record),
        promotions=lambda wc: transfer_promotions(wc.dataset),
    output:
        markdown=report(
            str(LAYOUT.transfer_markdown("{dataset}")), caption="../report/transfer_table.rst",
            category="Transfer across resolutions", subcategory="{dataset}",
        ),
        record=str(LAYOUT.transfer_record("{dataset}")),
        figure=[
            report(str(p), caption="../report/transfer_figure.rst", category="Transfer across resolutions", subcategory="{dataset}")
            for p in figure_files(LAYOUT.transfer_figure("{dataset}"))
        ],
    params:
        config=digest(transfer_config(SETTINGS)),
        results=lambda wc, output: Path(output.markdown).parents[2],  # <results>/transfer/<dataset>/
        iishpo=IISHPO,
        overrides=OVERRIDE_ARGS,
    log:
        str(LAYOUT.transfer_dir("{dataset}") / "analyze_transfer.log"),
    threads: LIGHT.threads
    resources:
        mem_mb=LIGHT.mem_mb,
        runtime=LIGHT.runtime,
    shell:
        "{params.iishpo} analyze-transfer --dataset {wildcards.dataset} --results {params.results} "
        "{params.overrides} 2> {log} && cat {output.markdown}"


rule transfer:
    input:
        lambda wc: [str(path) for path in LAYOUT.transfer_files(STUDY)],
