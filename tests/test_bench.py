import bench


def test_a_bad_config_is_one_clear_error(capsys):
    assert bench.main(["--variants=eager", "--n_layers=2"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown config key 'n_layers'")
